"""``llm_internals``: sinks, variance, dimension disparity, effective rank, convergence, interventions.

For an ``llama_baseline`` / ``headwise_rmsnorm`` cell (arXiv:2605.06611; sink rate of Gu et al.,
arXiv:2410.10781), with :mod:`adapters.llm_internals.internals` on ``n_seqs`` inputs of T =
``seq`` tokens (eager attention):

* ``first_token_mass`` mean α_0 over layers and heads; ``first_token_mass_max`` the largest head;
  ``sink_rate`` share of heads with α_0 > ``eps`` (0.3). Per layer as curves
  ``first_token_mass_layer`` / ``sink_rate_layer`` (MLflow step = layer index). Inputs: held-out
  text windows (``sink_inputs: text``, Gu et al.'s setting) or random tokens.
* ``var_ratio`` v_0 / mean_{t≥1} v_t at the o_proj input, mean over layers, on random-token inputs;
  ``var_ratio_init`` the same at initialisation; ``var_ratio_layer`` per layer; ``rms_ratio``
  E‖o_0‖² / mean_{t≥1} E‖o_t‖² (the magnitude the head norm equalises by construction).
* ``dom_ratio`` DomRatio of the first token's residual (mean over layers); ``eff_rank`` effective
  rank of the hidden states (mean over layers).
* Convergence: ``val_loss`` (held-out, at the last step), ``val_loss_s<k>`` at each fixed step k of
  the recipe's evaluation grid, ``train_loss_final`` (mean of the last 20 steps),
  ``steps_to_target`` the first step whose running mean (20 steps) of the training loss is
  <= ``target_loss`` (the step budget when never reached; ``target_reached`` says which).
* Interventions at position ``k``: ``alpha_k_plain`` (α_k without intervention), ``mask_alpha_k``
  / ``mask_sink_rate_k`` (k attends only to itself; α_k over layers after the first, where a sink
  created by layer 0's variance outlier could show), ``mask_var_ratio_k`` (o_proj-input variance at
  k over its neighbours' mean, layer 0); ``amp_alpha_k`` / ``rescale_alpha_k`` (variance
  amplification vs plain rescale by λ at layer ``amp_layer``, α_k over the later layers).

Plots: ``plots/attention_<method>_s<seed>.png``, ``plots/loss_<method>_s<seed>.png``,
``plots/variance_<method>_s<seed>.png``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, model_validator

from adapters.llm_internals import plots
from adapters.llm_internals.corpus import eval_windows
from adapters.llm_internals.params import VOCAB
from bench.errors import MetricError
from bench.metrics.base import Column, Metric, MetricParams
from bench.registry import register_metric

if TYPE_CHECKING:  # torch (and the torch modules of the family) are imported where the metric computes:
    import torch   # checking a suite (the light route, adapters.llm_internals.params) loads none


class InternalsParams(MetricParams):
    eps: float = Field(0.3, gt=0, lt=1, description="sink threshold ε on α_0 (Gu et al.: 0.3)")
    seq: int = Field(64, ge=8, description="T, tokens per probe sequence")
    n_seqs: int = Field(64, ge=2, description="probe sequences")
    sink_inputs: str = Field("text", pattern="^(text|random)$", description="held-out text windows or random tokens")
    probe_seed: int = Field(7, description="generator seed of the random-token inputs")
    target_loss: float = Field(2.5, gt=0, description="target training loss (nats/byte) of steps_to_target")
    k: int = Field(10, ge=1, description="position the interventions move the sink to")
    amp_layer: int = Field(0, ge=0, description="layer whose o_proj input is amplified")
    amp_lambda: float = Field(4.0, gt=1, description="λ of the variance amplification / plain rescale")
    plots: bool = True

    @model_validator(mode="after")
    def _k_inside_seq(self) -> "InternalsParams":
        if self.k >= self.seq:
            raise ValueError(f"k {self.k} must be < seq {self.seq} (the sink is moved to a position of the sequence)")
        return self


COLUMNS = {
    "sink_rate": Column("sink rate (α0>ε)", False),
    "first_token_mass": Column("α0 mean", False),
    "first_token_mass_max": Column("α0 max head", False),
    "var_ratio": Column("pos-0 var ratio", False),
    "var_ratio_init": Column("pos-0 var ratio @init", False),
    "rms_ratio": Column("pos-0 RMS² ratio", False),
    "dom_ratio": Column("DomRatio tok0", False),
    "eff_rank": Column("eff. rank", True),
    "val_loss": Column("val loss", False, "nats/B"),
    "train_loss_final": Column("train loss", False, "nats/B"),
    "steps_to_target": Column("steps to target", False),
    "target_reached": Column("target reached", True),
    "alpha_k_plain": Column("α_k plain", False),
    "mask_alpha_k": Column("α_k self-mask", True),
    "mask_sink_rate_k": Column("sink rate@k self-mask", True),
    "mask_var_ratio_k": Column("var ratio@k self-mask", True),
    "amp_alpha_k": Column("α_k var-amp", True),
    "rescale_alpha_k": Column("α_k rescale", False),
}


def running_mean(x: list[float], w: int = 20) -> list[float]:
    out, s = [], 0.0
    for i, v in enumerate(x):
        s += v
        if i >= w:
            s -= x[i - w]
        out.append(s / min(i + 1, w))
    return out


def steps_to_target(history: list[float], target: float, w: int = 20) -> tuple[int, bool]:
    """(first 1-based step whose running mean <= target, True), or (len(history), False)."""
    for i, v in enumerate(running_mean(history, w)):
        if i + 1 >= w and v <= target:
            return i + 1, True
    return len(history), False


def _alpha_under(model, ids, k: int, ctxmgr, layers_from: int) -> tuple[float, float, torch.Tensor]:
    import torch

    from adapters.llm_internals.internals import alpha_k, capture, sink_rate, variance_profile

    with torch.no_grad():
        with ctxmgr, capture(model, attention=True, o_proj_in=True) as rec:
            model.model(input_ids=ids)
        a = torch.stack([alpha_k(x, k) for x in rec["attn"]])  # [L, H]
        sel = a[layers_from:] if layers_from < len(a) else a
        return float(sel.mean()), sink_rate(sel), torch.stack([variance_profile(o) for o in rec["o_in"]])


@register_metric("llm_internals")
class LlmInternals(Metric):
    requires = ()
    Params = InternalsParams

    @staticmethod
    def method_problems(params: InternalsParams, adapter_params) -> list[str]:
        """``amp_layer`` must be a layer of the method's model (checked by ``bench validate``, not after training)."""
        layers = getattr(getattr(adapter_params, "arch", None), "layers", None)
        if isinstance(layers, int) and params.amp_layer >= layers:
            return [f"amp_layer: {params.amp_layer} is not a layer of the {layers}-layer model; use 0..{layers - 1}"]
        return []

    @classmethod
    def columns(cls, params) -> dict[str, Column]:
        return dict(COLUMNS)

    def compute(self, adapter, ctx, params) -> dict[str, float]:
        import torch

        from adapters.llm_internals.internals import measure, sink_rate
        from adapters.llm_internals.interventions import amplify_variance, self_only_mask

        if getattr(adapter, "models", None) is not None:
            return {}  # a seedprint_matrix cell: these diagnostics are per pre-training arm (not applicable)
        model = getattr(adapter, "model", None)
        local = getattr(adapter, "tokenizer", None) is not None  # a local_pretrained checkpoint
        if model is None or (getattr(adapter, "trained", None) is None and not local):
            raise MetricError("llm_internals: the adapter holds no trained model (use llama_baseline / "
                              "headwise_rmsnorm / local_pretrained)")
        dev = next(model.parameters()).device
        g = torch.Generator().manual_seed(params.probe_seed)
        rand_ids = torch.randint(0, getattr(adapter, "vocab", VOCAB), (params.n_seqs, params.seq), generator=g)
        if local:
            text_ids = adapter.text_ids(ctx.dataset.test.ids, params.n_seqs, params.seq)
        else:
            text_ids = eval_windows(ctx.dataset.test.ids, params.n_seqs, params.seq)[:, :-1]
        rand_ids, text_ids = rand_ids.to(dev), text_ids.to(dev)
        attn_ids = text_ids if params.sink_inputs == "text" else rand_ids
        L = len(model.model.layers)
        if params.amp_layer >= L or params.k >= params.seq:
            raise MetricError(f"llm_internals: amp_layer {params.amp_layer} must be < {L} layers and k {params.k} "
                              f"< seq {params.seq}")
        res = measure(model, attn_ids, rand_ids)
        init = measure(adapter.init_model, attn_ids, rand_ids) if adapter.init_model is not None else res
        for l in range(L):
            ctx.log_metric("first_token_mass_layer", float(res.alpha0[l].mean()), l)
            ctx.log_metric("sink_rate_layer", sink_rate(res.alpha0[l], params.eps), l)
            ctx.log_metric("var_ratio_layer", float(res.var_ratio[l]), l)
            if adapter.init_model is not None:
                ctx.log_metric("var_ratio_init_layer", float(init.var_ratio[l]), l)
            ctx.log_metric("dom_ratio_layer", float(res.dom_ratio[l]), l)
            ctx.log_metric("eff_rank_layer", float(res.eff_rank[l]), l)
        out = {
            "sink_rate": sink_rate(res.alpha0, params.eps),
            "first_token_mass": float(res.alpha0.mean()),
            "first_token_mass_max": float(res.alpha0.max()),
            "var_ratio": float(res.var_ratio.mean()),
            "rms_ratio": float(res.rms_ratio.mean()),
            "dom_ratio": float(res.dom_ratio.mean()),
            "eff_rank": float(res.eff_rank.mean()),
        }
        tr = adapter.trained
        hist, val = (tr.history, tr.val) if tr is not None else ([], {})
        if adapter.init_model is not None:
            out["var_ratio_init"] = float(init.var_ratio.mean())
        if tr is not None:
            steps, reached = steps_to_target(hist, params.target_loss)
            out.update({"val_loss": float(val[max(val)]),
                        "train_loss_final": float(sum(hist[-20:]) / max(1, len(hist[-20:]))),
                        "steps_to_target": float(steps), "target_reached": float(reached)})
            for s, v in sorted(val.items()):
                if s > 0:
                    out[f"val_loss_s{s}"] = float(v)
        k = params.k
        import contextlib

        plain, _, _ = _alpha_under(model, attn_ids, k, contextlib.nullcontext(), 1)
        m_a, m_sr, m_prof = _alpha_under(model, attn_ids, k, self_only_mask(model, k), 1)
        prof_k = m_prof[0]  # layer 0: o_proj-input variance profile with the mask
        neigh = torch.cat([prof_k[max(1, k - 3):k], prof_k[k + 1:k + 4]]).mean()
        amp, _, _ = _alpha_under(model, attn_ids, k, amplify_variance(model, params.amp_layer, k, params.amp_lambda),
                                 params.amp_layer + 1)
        resc, _, _ = _alpha_under(model, attn_ids, k, amplify_variance(model, params.amp_layer, k, params.amp_lambda,
                                                                      "rescale"), params.amp_layer + 1)
        out.update({"alpha_k_plain": plain, "mask_alpha_k": m_a, "mask_sink_rate_k": m_sr,
                    "mask_var_ratio_k": float(prof_k[k] / neigh), "amp_alpha_k": amp, "rescale_alpha_k": resc})
        if params.plots:
            tag = f"{ctx.method.name}_s{ctx.seed}"
            d = ctx.artifact_dir / "plots"
            plots.attention_map(res.attn_mean, res.alpha0, d / f"attention_{tag}.png",
                                f"{ctx.method.name} seed {ctx.seed}: attention (mean over {params.n_seqs} "
                                f"{params.sink_inputs} sequences and heads); sink rate {out['sink_rate']:.2f}")
            if tr is not None:
                plots.loss_curve(hist, val, d / f"loss_{tag}.png", f"{ctx.method.name} seed {ctx.seed}",
                                 params.target_loss)
            profiles = {"trained": res.var_profile}
            if adapter.init_model is not None:
                profiles = {"at init": init.var_profile, **profiles}
            plots.variance_profile_plot(profiles,
                                        d / f"variance_{tag}.png",
                                        f"{ctx.method.name} seed {ctx.seed}: o_proj-input variance by position "
                                        "(random tokens)")
        return out
