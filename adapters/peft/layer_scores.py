"""The Layer Card: per-layer residual signal, conditioning, coupling and cost of LoRA placement.

Paper: Xu, Liang, Dai, Hu, Chan, Ma, "Understanding and Guiding Layer Placement in
Parameter-Efficient Fine-Tuning of Large Language Models", arXiv:2602.04019 (2026). The paper
names the quantities (projected residual norm Res_l, activation energy E_act(Sigma_l), layer
coupling rho; "for squared loss and linear adapters, the resnorm equals a normalized gradient
norm") and the Layer Card (per layer: residual signal strength, compute cost, performance), but
its exact formulas and selection rule were not available. **The formulas below are the
operationalisation derived in ``docs/methods/layer_card.md`` (the project's method note), not
the paper's**:

For a linear map W in R^{d_out x d_in} of layer l, over the N (non-padding) tokens of a
calibration batch with inputs X in R^{N x d_in} and loss gradient nabla_W L = (dL/dY)ᵀ X:

* Sigma = XᵀX / N + eps I, eps = ``ridge`` * tr(XᵀX/N) / d_in;
* **Res = || nabla_W L  Sigma^{-1/2} ||_F** (covariance-normalised gradient). For squared loss
  L = (1/2N) sum_i ||y_i - t_i||² and eps = 0 this equals ||P_X R||_F / sqrt(N), the norm of the
  least-squares projection of the residual R = T - XW onto span(X) (tested in
  ``tests/test_peft_layer_card.py``);
* **E_act = tr(Sigma^{-1}) / d_in** (least-squares noise amplification) and kappa(Sigma);
* **rho_lm = |cos(delta f_l, delta f_m)|**, delta f_l = J_l · (-nabla_l Sigma_l^{-1}): the
  first-order change of the label-position log-probabilities under a natural-gradient step on
  layer l's seven linear maps (one ``torch.func.jvp`` per layer);
* **Perf_l** = validation-loss drop after a short single-layer LoRA probe; **Cost_l** = the probe's
  median s/step, peak memory, and the layer's adapter parameters.

Per layer the seven maps (q/k/v/o, gate/up/down) are pooled: Res_l = sqrt(sum of Res²),
E_act_l = mean, log10 kappa_l = max. Computation uses a thin SVD of X (X = U S Vᵀ), so
Sigma^{-1} is never formed: with lambda_j = s_j²/N + eps, nabla_W L = C Vᵀ where C = (dL/dY)ᵀ U S,
Res² = ||C diag(lambda^{-1/2})||², tr(Sigma^{-1}) = sum 1/lambda_j + (d_in - rank)/eps.
"""
from __future__ import annotations

import csv
import json
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch


from adapters.peft.params import LINEARS  # noqa: E402,F401  (the light home of the names)


def layer_linears(model, i: int) -> dict[str, torch.nn.Linear]:
    """The seven linear maps of decoder layer ``i`` of an HF Qwen3/Llama-style causal LM."""
    layer = model.model.layers[i]
    a, m = layer.self_attn, layer.mlp
    return {"q_proj": a.q_proj, "k_proj": a.k_proj, "v_proj": a.v_proj, "o_proj": a.o_proj,
            "gate_proj": m.gate_proj, "up_proj": m.up_proj, "down_proj": m.down_proj}


@dataclass
class MapStats:
    """Card statistics of one linear map; ``step_left @ step_right`` = -nabla_W L Sigma^{-1}."""

    res: float
    e_act: float
    kappa: float
    d_in: int
    n_tokens: int
    step_left: torch.Tensor | None = None   # float [d_out, r]
    step_right: torch.Tensor | None = None  # float [r, d_in]


def map_stats(X: torch.Tensor, grad_W: torch.Tensor | None = None, G: torch.Tensor | None = None,
              ridge: float = 1e-4, keep_step: bool = True) -> MapStats:
    """Res / E_act / kappa of a linear map from its inputs X [N, d_in] and loss gradient.

    Give either ``grad_W`` (float [d_out, d_in], = dL/dW) or ``G`` (float [N, d_out], = dL/dY, then
    dL/dW = Gᵀ X). Computed in float64. ``ridge`` = 0 is allowed when N >= d_in and X has full rank.
    """
    X = X.double()
    N, d = X.shape
    U, S, Vh = torch.linalg.svd(X, full_matrices=False)  # U [N, r], S [r], Vh [r, d]
    r = S.numel()
    eps = ridge * float((S**2).sum()) / (N * d)
    lam = S**2 / N + eps
    if G is not None:
        C = G.double().T @ (U * S)  # [d_out, r]: dL/dW = C Vh
    else:
        C = grad_W.double() @ Vh.T  # grad_W lies in the row space of X
    res = float(torch.linalg.norm(C * lam.rsqrt()))
    tiny = lam.max() * 1e-12
    inv = 1.0 / lam.clamp_min(tiny)
    rest = d - r
    if rest > 0:
        if eps <= 0:
            e_act, kappa = math.inf, math.inf
        else:
            e_act, kappa = (float(inv.sum()) + rest / eps) / d, float(lam.max()) / eps
    else:
        e_act, kappa = float(inv.sum()) / d, float(lam.max() / lam.min().clamp_min(tiny))
    st = MapStats(res=res, e_act=e_act, kappa=kappa, d_in=d, n_tokens=N)
    if keep_step:  # kept on the CPU: L x 7 factor pairs are large for an 8B model
        st.step_left = (-(C * inv)).float().cpu()
        st.step_right = Vh.float().cpu()
    return st


@dataclass
class LayerCard:
    """One row per decoder layer plus the L x L coupling matrix and provenance."""

    rows: list[dict]
    coupling: list[list[float]]
    meta: dict = field(default_factory=dict)

    def column(self, key: str) -> list[float]:
        return [float(r[key]) for r in self.rows]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "LayerCard":
        return cls(**json.loads(text))


# -- the calibration pass ----------------------------------------------------------------------------
def card_statistics(model, batch: dict[str, torch.Tensor], ridge: float = 1e-4,
                    layers: list[int] | None = None) -> dict[int, dict[str, MapStats]]:
    """Per layer and linear map: :class:`MapStats` from one forward/backward pass on ``batch``.

    ``batch``: input_ids / attention_mask / labels (int64 [B, T]); the loss is the model's mean
    next-token cross-entropy over label tokens. Base weights stay frozen: gradients flow because
    the input embeddings are made to require grad. Inputs X are kept only until the map's output
    gradient arrives, then reduced at once (peak memory: one layer's activations at a time).
    """
    n_layers = len(model.model.layers)
    layers = list(range(n_layers)) if layers is None else layers
    keep = batch["attention_mask"].reshape(-1).bool()
    stats: dict[int, dict[str, MapStats]] = {i: {} for i in layers}
    handles = []

    def fwd(i, name):
        def hook(mod, args, out):
            x = args[0].detach().reshape(-1, args[0].shape[-1])[keep]

            def on_grad(g):
                gg = g.detach().reshape(-1, g.shape[-1])[keep]
                stats[i][name] = map_stats(x, G=gg, ridge=ridge)
            out.register_hook(on_grad)
        return hook

    for i in layers:
        for name, lin in layer_linears(model, i).items():
            handles.append(lin.register_forward_hook(fwd(i, name)))
    emb = model.get_input_embeddings()
    handles.append(emb.register_forward_hook(lambda m, a, out: out.requires_grad_(True)))
    try:
        was = model.training
        model.eval()
        with torch.enable_grad():
            loss = model(**batch).loss
            loss.backward()
        model.train(was)
    finally:
        for h in handles:
            h.remove()
    return stats


def _label_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Log-probabilities (float [M, V]) at the M positions that predict a label token."""
    pos = labels[:, 1:] != -100
    return torch.log_softmax(logits[:, :-1][pos].float(), dim=-1)


def coupling_matrix(model, batch: dict[str, torch.Tensor], stats: dict[int, dict[str, MapStats]],
                    sketch_above: int = 1 << 22, sketch_dim: int = 256) -> list[list[float]]:
    """rho [L x L]: |cos| between layers' first-order output changes under natural-gradient steps.

    delta f_l = d/dt logp(W_l + t·Delta_l)|_{t=0} (float [M, V]: label positions x vocabulary) with
    Delta_l = -nabla Sigma^{-1} on each of layer l's maps, computed with ``torch.func.jvp`` through
    eager attention (central finite differences if an op lacks forward-mode AD). When M·V exceeds
    ``sketch_above`` (large vocabularies), each delta f is multiplied by one fixed Gaussian sketch
    [V, sketch_dim] / sqrt(sketch_dim) (Johnson-Lindenstrauss: cosines kept up to O(1/sqrt(M·k))).
    """
    cfg = model.config
    attn_impl = getattr(cfg, "_attn_implementation", None)
    if attn_impl not in (None, "eager"):
        cfg._attn_implementation = "eager"
    try:
        return _coupling(model, batch, stats, sketch_above, sketch_dim)
    finally:
        if attn_impl not in (None, "eager"):
            cfg._attn_implementation = attn_impl


def _coupling(model, batch, stats, sketch_above: int, sketch_dim: int) -> list[list[float]]:
    from torch.func import functional_call, jvp

    inputs = {k: v for k, v in batch.items() if k != "labels"}
    names_of = {id(p): n for n, p in model.named_parameters()}
    sketch = None
    deltas = []
    for i in sorted(stats):
        names, prim, tang = [], [], []
        for name, lin in layer_linears(model, i).items():
            st = stats[i][name]
            names.append(names_of[id(lin.weight)])
            prim.append(lin.weight)
            tang.append((st.step_left @ st.step_right).to(lin.weight.device, lin.weight.dtype))

        def f(*ws, names=names):
            out = functional_call(model, dict(zip(names, ws)), args=(), kwargs=inputs, strict=False)
            return _label_logprobs(out.logits, batch["labels"])

        with torch.no_grad():
            try:
                _, df = jvp(f, tuple(prim), tuple(tang))
            except (RuntimeError, NotImplementedError):
                scale = max(float(t.abs().max()) for t in tang) or 1.0
                h = 1e-3 / scale
                df = (f(*[p + h * t for p, t in zip(prim, tang)]) - f(*[p - h * t for p, t in zip(prim, tang)])) / (2 * h)
            df = df.float()
            if df.numel() > sketch_above:
                if sketch is None:
                    g = torch.Generator(device="cpu").manual_seed(0)
                    sketch = (torch.randn(df.shape[-1], sketch_dim, generator=g) / sketch_dim ** 0.5).to(df.device)
                df = df @ sketch
        deltas.append(df.reshape(-1).double().cpu())
    D = torch.stack(deltas)
    Dn = D / D.norm(dim=1, keepdim=True).clamp_min(1e-30)
    return (Dn @ Dn.T).abs().tolist()


# -- selection -----------------------------------------------------------------------------------
Placement = Literal["card", "all", "top", "bottom", "mid", "uniform", "random"]
Score = Literal["probe", "res_over_eact", "resnorm"]


def layer_scores(card: LayerCard, score: Score) -> list[float]:
    if score == "probe":
        if any(r.get("probe_gain") is None for r in card.rows):
            raise ValueError("score 'probe' needs probe runs (probe_steps > 0)")
        return card.column("probe_gain")
    if score == "resnorm":
        return card.column("resnorm")
    return [r["resnorm"] / r["e_act"] if r["e_act"] > 0 else 0.0 for r in card.rows]


def fixed_placement(kind: Placement, n_layers: int, k: int, seed: int) -> list[int]:
    """The ablation placements of the method note: top/bottom/mid/uniform/random-k and all."""
    k = max(1, min(k, n_layers))
    if kind == "all":
        return list(range(n_layers))
    if kind == "bottom":
        return list(range(k))
    if kind == "top":
        return list(range(n_layers - k, n_layers))
    if kind == "mid":
        lo = (n_layers - k) // 2
        return list(range(lo, lo + k))
    if kind == "uniform":
        return sorted({int(round(j * (n_layers - 1) / max(1, k - 1))) for j in range(k)}) if k > 1 else [n_layers // 2]
    if kind == "random":
        return sorted(random.Random(f"placement:{seed}").sample(range(n_layers), k))
    raise ValueError(kind)


def select_layers(card: LayerCard, score: Score, k: int | None, cost_budget: float | None,
                  cost_fn, rho_max: float) -> tuple[list[int], list[str]]:
    """Greedy card rule (the method note's heuristic): best score first; skip a layer whose max
    coupling with the chosen ones is >= ``rho_max``; stop at ``k`` layers or when the next layer
    would push ``cost_fn(chosen)`` (a fraction of the all-layer cost) over ``cost_budget``. If
    coupling leaves fewer than ``k`` layers, the best skipped ones fill up. Returns (layers, log).
    """
    s = layer_scores(card, score)
    order = sorted(range(len(s)), key=lambda i: -s[i])
    chosen: list[int] = []
    log = []
    target = k if k is not None else len(s)
    for i in order:
        if len(chosen) >= target:
            break
        if cost_budget is not None and cost_fn(chosen + [i]) > cost_budget + 1e-9:
            log.append(f"layer {i}: over cost budget ({cost_fn(chosen + [i]):.3f} > {cost_budget})")
            continue
        rho = max((card.coupling[i][j] for j in chosen), default=0.0)
        if rho >= rho_max:
            log.append(f"layer {i}: coupled (rho={rho:.2f} >= {rho_max}) with {chosen}")
            continue
        chosen.append(i)
        log.append(f"layer {i}: chosen (score={s[i]:.4g}, max rho={rho:.2f})")
    if len(chosen) < target:
        for i in order:
            if len(chosen) >= target:
                break
            if i in chosen or (cost_budget is not None and cost_fn(chosen + [i]) > cost_budget + 1e-9):
                continue
            chosen.append(i)
            log.append(f"layer {i}: filled in despite coupling")
    if not chosen:  # a budget below one layer's cost: take the cheapest-best single layer
        chosen = [order[0]]
        log.append(f"layer {order[0]}: budget admits no layer; took the best one")
    return sorted(chosen), log


# -- artefacts --------------------------------------------------------------------------------------
CARD_COLUMNS = ["layer", "resnorm", "e_act", "log10_kappa", "res_over_eact", "probe_gain",
                "probe_s_per_step", "probe_peak_mem_mb", "adapter_params", "flops_frac"]


def write_card(card: LayerCard, selected: list[int], out_dir: Path, title: str) -> list[Path]:
    """layer_card.csv, layer_card.md, layer_card_coupling.csv and layer_card.png in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    p = out_dir / "layer_card.csv"
    with open(p, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CARD_COLUMNS + ["selected"])
        for r in card.rows:
            w.writerow([r.get(c) for c in CARD_COLUMNS] + [int(r["layer"] in selected)])
    paths.append(p)
    p = out_dir / "layer_card_coupling.csv"
    with open(p, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["layer"] + [str(i) for i in range(len(card.coupling))])
        for i, row in enumerate(card.coupling):
            w.writerow([i] + [f"{x:.4f}" for x in row])
    paths.append(p)

    def fmt(x):
        if x is None:
            return "—"
        return f"{x:.4g}" if isinstance(x, float) else str(x)

    lines = [f"# Layer Card: {title}", "",
             "Operationalisation from the project's method note (docs/methods/layer_card.md), "
             "not the paper's formulas (arXiv:2602.04019 does not publish them).", "",
             "| " + " | ".join(CARD_COLUMNS + ["selected"]) + " |", "|" + "---|" * (len(CARD_COLUMNS) + 1)]
    for r in card.rows:
        lines.append("| " + " | ".join(fmt(r.get(c)) for c in CARD_COLUMNS) + f" | {'✔' if r['layer'] in selected else ''} |")
    lines += ["", "Coupling rho (|cos| of natural-gradient output changes):", "",
              "| | " + " | ".join(str(i) for i in range(len(card.coupling))) + " |",
              "|" + "---|" * (len(card.coupling) + 1)]
    for i, row in enumerate(card.coupling):
        lines.append(f"| {i} | " + " | ".join(f"{x:.2f}" for x in row) + " |")
    lines += ["", "Meta: " + json.dumps(card.meta)]
    p = out_dir / "layer_card.md"
    p.write_text("\n".join(lines) + "\n")
    paths.append(p)
    paths.append(plot_card(card, selected, out_dir / "layer_card.png", title))
    return paths


def plot_card(card: LayerCard, selected: list[int], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    L = len(card.rows)
    x = list(range(L))
    keys = [("resnorm", "Res_l (projected residual norm)"), ("e_act", "E_act (tr Σ⁻¹ / d)"),
            ("probe_gain", "Perf_l: probe val-loss drop [nats]"), ("probe_s_per_step", "Cost_l: probe s/step")]
    keys = [(k, t) for k, t in keys if all(r.get(k) is not None for r in card.rows)]
    fig, axes = plt.subplots(1, len(keys) + 1, figsize=(3.2 * (len(keys) + 1), 3.0))
    for ax, (k, t) in zip(axes, keys):
        vals = card.column(k)
        ax.bar(x, vals, color=["tab:orange" if i in selected else "tab:gray" for i in x])
        ax.set_title(t, fontsize=8)
        ax.set_xlabel("layer")
        if k == "e_act":
            ax.set_yscale("log")
    ax = axes[-1]
    im = ax.imshow(card.coupling, vmin=0, vmax=1, cmap="viridis")
    ax.set_title("coupling rho", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(f"{title} (orange: selected {selected})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
