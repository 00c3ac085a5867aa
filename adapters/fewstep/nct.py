"""``nct``: a new control for a frozen one-step generator by Noise Consistency Training
(Luo et al., arXiv 2506.19741, Algorithm 1; equations rebuilt in docs/methods/nct.md).

The base ``f`` is the TDM student distilled for ``base_steps`` (1: a one-step generator); the
adapter phi (:class:`net.ControlAdapter`, zero-initialised: f_phi = f before training) sees the
control c = h(f(z)) (``lowres7``: the 7x7 means of the generated image in [0, 1]) and the noise.
Per step, with z, eps ~ N(0, I) and x = f(z) (no grad), c = h(x), k uniform in [0, N):

* ``z_k = sqrt(1 - sigma_k^2) z + sigma_k eps``, sigma_k = sin(pi k / (2N)) (the same eps for k, k+1);
* noise consistency ``L_con = ||f_phi(z_{k+1}, c) - sg f_phi(z_k, c)||^2`` (sum over pixels);
* boundary ``L_bound = ||f_phi(z, c) - x||^2``;
* loss ``w_con L_con + lambda L_bound``; dual ascent ``lambda <- max(0, lambda + eta (L_bound - xi))``
  (``boundary: fixed`` keeps lambda_0, ``off`` sets it to 0: the ablations).

``variant: regression`` is the naive adapter ``||f_phi(z', c) - x||^2`` with z' independent of c;
``none`` keeps the zero adapter (the uncontrolled generator). No original training image is read
while the adapter trains (the data set's train split is replaced by a raiser for the duration).
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any, Iterator

import torch

from adapters.fewstep import flow
from adapters.fewstep.common import FewStepAdapter, FrozenSampler, cached_stage, lowres7, seed_of, stage_key
from adapters.fewstep.net import ControlAdapter, VelocityNet, n_params
from adapters.fewstep.params import FewStepBudget, NCTParams
from adapters.fewstep.tdm import load_student, tdm_params_of
from bench.adapter import NFEMeter
from bench.registry import register_adapter
from bench.training import Update, fit

NCT_FIELDS = ("control", "variant", "consistency_weight", "boundary", "lambda0", "dual_lr", "margin", "levels",
              "adapter_width", "adapter_output_skip")


class _NoTrainImages:
    """Stands in for ``dataset.train`` while the NCT adapter trains: any use is an AssertionError."""

    def _fail(self, *_):
        raise AssertionError("NCT must not read the original training images (dataset.train was accessed)")

    __getattr__ = __len__ = __getitem__ = __iter__ = _fail


@contextmanager
def training_images_forbidden(ds: Any) -> Iterator[None]:
    """Within the block, any access to ``ds.train`` raises AssertionError (restored afterwards)."""
    saved = ds.train
    object.__setattr__(ds, "train", _NoTrainImages())
    try:
        yield
    finally:
        object.__setattr__(ds, "train", saved)


def controlled(G: VelocityNet, A: ControlAdapter, z: torch.Tensor, c: torch.Tensor, y: torch.Tensor, steps: int,
               k: float) -> torch.Tensor:
    """f_phi(z, c): Euler on the frozen G with the adapter's additions (from c in [0, 1] and z) at every step."""
    return flow.euler(G, z, y, steps, k, inject=A(2 * c - 1, z))


def nct_train(G: VelocityNet, A: ControlAdapter, p: NCTParams, budget: FewStepBudget, num_classes: int, seed: int,
              ctx: Any) -> dict:
    """Train the adapter ``A`` in place (G frozen); returns the record (losses, final lambda, seconds)."""
    gen = torch.Generator().manual_seed(seed + 43)
    update = Update(torch.optim.Adam(A.parameters(), lr=budget.lr_adapter), clip=1.0, what="NCT adapter")
    lam = 0.0 if p.boundary == "off" else p.lambda0
    K, N = p.base_steps, p.levels

    def f(zz, cc, yy):
        return controlled(G, A, zz, cc, yy, K, p.shift)

    def step_fn(step: int, _):
        nonlocal lam
        z = torch.randn(budget.nct_batch, 1, 28, 28, generator=gen)
        y = torch.randint(0, num_classes, (budget.nct_batch,), generator=gen)
        with torch.no_grad():
            x = flow.euler(G, z, y, K, p.shift)
            c = lowres7(x)
        if p.variant == "regression":
            z_ind = torch.randn(z.shape, generator=gen)
            loss = (f(z_ind, c, y) - x).pow(2).flatten(1).sum(1).mean()
            return loss, {"loss_regression": loss}
        eps = torch.randn(z.shape, generator=gen)
        kk = torch.randint(0, N, (len(z),), generator=gen).float()
        sig_k = torch.sin(math.pi * kk / (2 * N)).view(-1, 1, 1, 1)
        sig_k1 = torch.sin(math.pi * (kk + 1) / (2 * N)).view(-1, 1, 1, 1)
        z_k, z_k1 = (1 - sig_k ** 2).sqrt() * z + sig_k * eps, (1 - sig_k1 ** 2).sqrt() * z + sig_k1 * eps
        with torch.no_grad():
            target = f(z_k, c, y)
        l_con = (f(z_k1, c, y) - target).pow(2).flatten(1).sum(1).mean()
        l_bound = (f(z, c, y) - x).pow(2).flatten(1).sum(1).mean()
        loss = p.consistency_weight * l_con + lam * l_bound
        if p.boundary == "primal_dual":
            lam = max(0.0, lam + p.dual_lr * (float(l_bound.detach()) - p.margin))
        return loss, {"loss_consistency": l_con, "loss_boundary": l_bound, "lambda": lam}

    A.train()
    res = fit(step_fn, iter(int, 1), budget.nct_steps, f"NCT adapter ({p.variant})", update, log=ctx.log_metric,
              log_prefix="train/nct_", show_progress=ctx.progress)
    return {"train_seconds": round(res.seconds, 2), "steps": budget.nct_steps, "adapter_params": n_params(A),
            "final_lambda": round(lam, 4), **{f"{k}_ema": round(v, 4) for k, v in res.ema.items() if k != "lambda"}}


@register_adapter("nct")
class NCTAdapter(FewStepAdapter):
    """The one-step generator with an NCT-trained control adapter (control kind ``lowres7``)."""

    Params = NCTParams
    controls = frozenset({"lowres7"})

    def load(self, ctx: Any, budget: FewStepBudget) -> None:
        p = self.params
        _, self.net, _, base_key = load_student(self, ctx, budget, tdm_params_of(p, student_steps=p.base_steps))
        torch.manual_seed(self.seed + 47)
        self.adapter = ControlAdapter(p.width, p.depth, p.adapter_width, p.adapter_output_skip)
        if p.variant != "none" and budget.nct_steps > 0:
            key = stage_key(base_key, "nct", {**{k: getattr(p, k) for k in NCT_FIELDS}, "budget": {
                k: getattr(budget, k) for k in ("nct_steps", "nct_batch", "lr_adapter")}})
            ctx.log_param("nct_cache_key", key)
            with training_images_forbidden(ctx.dataset):
                self.records["nct"] = cached_stage(ctx, key, {"adapter": self.adapter}, lambda: nct_train(
                    self.net, self.adapter, p, budget, self.num_classes, self.seed, ctx))
        self.adapter.eval().requires_grad_(False)

    def generate(self, z, y, steps, control):
        """f_phi(z, c) at ``steps`` Euler steps (NFE = steps). Without a control (the harness's
        ``sample``): c = h(f(z')) of the base at an independent noise z' seeded by z, made under its
        own NFE meter (the control is an input, not part of this generator's NFE)."""
        if control is None:
            with NFEMeter():
                z_ind = torch.randn(z.shape, generator=torch.Generator().manual_seed(seed_of(z, 1)))
                control = lowres7(flow.euler(self.net, z_ind, y, self.params.base_steps, self.params.shift))
        return controlled(self.net, self.adapter, z, control, y, steps, self.params.shift)

    def drift_reference(self):
        """The frozen base generator at ``base_steps`` (NCT's FD is against its images)."""
        return FrozenSampler(self.net, self.params.shift, f"tdm{self.params.base_steps}"), self.params.base_steps
