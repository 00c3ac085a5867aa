"""``tdm``: a few-step student distilled from the teacher by Trajectory Distribution Matching
(Luo et al., arXiv 2503.06674): the student's deterministic K-step trajectory is rolled out, and at
a random step j its one-step output ``x_{j+1}`` is matched, after re-noising to a level tau above
s_{j+1}, to the teacher's marginal by reverse-KL distribution matching with a fake score F
trained on the student's own re-noised outputs (DMD-style, "distribution matching at each step").
The recipe follows the TDM-R1 training script as summarised in docs/methods/tdm_r1.md,
steps (a) and (c) without the reward direction:

(a) fake score: ``x_tau = a x_nxt + b eps`` (:func:`flow.renoise`), target ``(x_tau - x0_hat) / tau``,
    ``L_F = ||v_F - v*||^2 + w ||v_F - v_ref||^2``;
(c) generator: stop-grad directions ``D_kl = x0_ref(x_tau) - x0_F(x_tau)`` and
    ``D_cfg = g (x0_ref(c) - x0_ref(null))``, ``L_G = sum_D w_D mean(||sg(x0_hat + D) - x0_hat||^2 / n)``
    with the per-sample normaliser ``n = mean|x0_hat - x0_ref^cfg|`` (detached).

Both optimisers are Adam with betas (0, 0.999) and step once per iteration (fake first). G and F
start as copies of the teacher; the student samples by Euler at any NFE (trained for K).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from adapters.fewstep import flow
from adapters.fewstep.common import FewStepAdapter, FrozenSampler, cached_stage, stage_key
from adapters.fewstep.net import VelocityNet
from adapters.fewstep.params import FewStepBudget, TDMParams
from adapters.fewstep.teacher import load_teacher
from bench.registry import register_adapter
from bench.training import Update, check_loss, fit

TDM_FIELDS = ("student_steps", "dm_weight", "guide_weight", "guide_scale", "fake_ref_weight", "tau_gap", "shift",
              "fake_target", "dm_t_min")


@dataclass
class TDMState:
    """The three networks of a TDM run and the two updates (student G, fake score F; ref frozen)."""

    G: VelocityNet
    F: VelocityNet
    ref: VelocityNet
    update_G: Update
    update_F: Update
    gen: torch.Generator
    step: int = 0
    extra: dict = field(default_factory=dict)

    @classmethod
    def start(cls, ref: VelocityNet, student: VelocityNet, budget: FewStepBudget, seed: int) -> "TDMState":
        G, F = copy.deepcopy(student).requires_grad_(True).train(), copy.deepcopy(ref).requires_grad_(True).train()
        opt_G = torch.optim.Adam(G.parameters(), lr=budget.lr_generator, betas=(0.0, 0.999))
        opt_F = torch.optim.Adam(F.parameters(), lr=budget.lr_fake, betas=(0.0, 0.999))
        return cls(G, F, ref, Update(opt_G, clip=1.0, what="TDM student"), Update(opt_F, clip=1.0, what="TDM fake score"),
                   torch.Generator().manual_seed(seed + 29))


class Hooks(Protocol):
    """What TDM-R1 adds to a TDM iteration (None: plain TDM)."""

    def after_fake(self, states: list[torch.Tensor], y: torch.Tensor) -> dict:
        """Called after the fake-score update (TDM-R1: the surrogate update); returns logged parts."""

    def generator_terms(self, x0_hat: torch.Tensor, x_nxt: torch.Tensor, s_next: float,
                        y: torch.Tensor) -> list[tuple[float, torch.Tensor, torch.Tensor]]:
        """Extra (weight, stop-grad direction D [B,1,28,28], normaliser n [B]) terms of L_G."""


def draw_batch(n: int, group_size: int, num_classes: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(z float32 [n, 1, 28, 28], labels int64 [n]): n // group_size classes, each repeated group_size times."""
    groups = max(1, n // group_size)
    y = torch.randint(0, num_classes, (groups,), generator=gen).repeat_interleave(group_size)
    return torch.randn(len(y), 1, 28, 28, generator=gen), y


def direction_loss(x0_hat: torch.Tensor, D: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    """mean_b( mean_pixels (sg(x0_hat + D) - x0_hat)^2 / n_b ): its gradient moves x0_hat along D."""
    return ((x0_hat + D).detach() - x0_hat).pow(2).flatten(1).mean(1).div(n).mean()


def tdm_step(st: TDMState, p: TDMParams, z: torch.Tensor, y: torch.Tensor, hooks: Hooks | None = None) -> dict:
    """One TDM iteration on the trajectories of (z [B,1,28,28], y [B]): fake update, hooks, generator update."""
    ts = flow.grid(p.student_steps, p.shift)
    gen = st.gen
    states = flow.rollout(st.G, z, y, ts)
    j = int(torch.randint(0, p.student_steps, (1,), generator=gen))
    x_j, s_j, s_n = states[j], ts[j], ts[j + 1]
    null = torch.full_like(y, st.ref.num_classes)
    # (a) fake score on the student's re-noised one-step outputs
    with torch.no_grad():
        v = st.G(x_j, torch.full((len(z),), s_j), y)
        x0_hat, x_nxt = x_j - s_j * v, x_j - (s_j - s_n) * v
        tau = flow.draw_times(len(z), s_n, p.tau_gap, p.shift, gen)
        eps = torch.randn(z.shape, generator=gen)
        x_tau = flow.renoise(x_nxt, s_n, tau, eps)
        if p.fake_target == "x0_hat":
            target = (x_tau - x0_hat) / tau.view(-1, 1, 1, 1)
        else:
            target = flow.state_velocity_target(x_nxt, s_n, tau, eps)
        v_ref = st.ref(x_tau, tau, y)
    v_F = st.F(x_tau, tau, y)
    loss_F = (v_F - target).pow(2).mean() + p.fake_ref_weight * (v_F - v_ref).pow(2).mean()
    st.update_F.step(loss_F, st.step, zero_grad_after=True)
    parts = {"loss_fake": float(loss_F.detach()), "j": j}
    if hooks is not None:
        parts.update(hooks.after_fake(states, y))
    # (c) generator: stop-grad directions at x_tau, pushed through x0_hat
    v = st.G(x_j, torch.full((len(z),), s_j), y)
    x0_hat, x_nxt = x_j - s_j * v, x_j - (s_j - s_n) * v
    with torch.no_grad():
        tau = flow.draw_times(len(z), max(s_n, p.dm_t_min), p.tau_gap, p.shift, gen)
        x_tau = flow.renoise(x_nxt.detach(), s_n, tau, torch.randn(z.shape, generator=gen))
        x0_c, x0_u = flow.x0_of(st.ref, x_tau, tau, y), flow.x0_of(st.ref, x_tau, tau, null)
        x0_F = flow.x0_of(st.F, x_tau, tau, y)
        D_kl, D_cfg = x0_c - x0_F, p.guide_scale * (x0_c - x0_u)
        n = (x0_hat - (x0_c + D_cfg)).abs().flatten(1).mean(1).clamp_min(1e-4)
    loss_G = p.dm_weight * direction_loss(x0_hat, D_kl, n)
    if p.guide_weight:
        loss_G = loss_G + p.guide_weight * direction_loss(x0_hat, D_cfg, n)
    if hooks is not None:
        for w, D, n_extra in hooks.generator_terms(x0_hat, x_nxt, s_n, y):
            if w:
                loss_G = loss_G + w * direction_loss(x0_hat, D, n_extra)
    check_loss(loss_G, "TDM student", st.step)
    st.update_G.step(loss_G, st.step, zero_grad_after=True)
    st.step += 1
    return {**parts, "loss_generator": float(loss_G.detach())}


def tdm_params_of(p: Any, **override) -> TDMParams:
    """The :class:`TDMParams` part of ``p`` (a TDMR1Params, or the flow fields of an NCTParams)."""
    fields = {k: getattr(p, k) for k in TDMParams.model_fields if hasattr(p, k)}
    fields.pop("default_steps", None)
    fields.pop("cfg_scale", None)
    return TDMParams(**{**fields, **override})


def tdm_key(adapter: FewStepAdapter, ctx: Any, budget: FewStepBudget, p: TDMParams) -> str:
    return stage_key(adapter.teacher_key(ctx, budget), "tdm", {
        **{k: getattr(p, k) for k in TDM_FIELDS},
        "budget": {k: getattr(budget, k) for k in ("tdm_steps", "tdm_batch", "lr_generator", "lr_fake")}})


def load_student(adapter: FewStepAdapter, ctx: Any, budget: FewStepBudget, p: TDMParams,
                 keep_fake: bool = False) -> tuple[VelocityNet, VelocityNet, VelocityNet | None, str]:
    """(teacher, student, fake score or None, the student's cache key): TDM-distilled with ``p``."""
    ref = load_teacher(adapter, ctx, budget)
    G, F = copy.deepcopy(ref), copy.deepcopy(ref)
    key = tdm_key(adapter, ctx, budget, p)
    ctx.log_param(f"tdm{p.student_steps}_cache_key", key)

    def train() -> dict:
        st = TDMState.start(ref, ref, budget, adapter.seed)
        batches = torch.Generator().manual_seed(adapter.seed + 31)

        def step_fn(step: int, _):
            z, y = draw_batch(budget.tdm_batch, 1, adapter.num_classes, batches)
            return None, tdm_step(st, p, z, y)

        res = fit(step_fn, iter(int, 1), budget.tdm_steps, f"TDM distillation (K={p.student_steps})",
                  log=ctx.log_metric, log_prefix=f"train/tdm{p.student_steps}_", show_progress=ctx.progress)
        G.load_state_dict(st.G.state_dict())
        F.load_state_dict(st.F.state_dict())
        return {"train_seconds": round(res.seconds, 2), "steps": budget.tdm_steps,
                "final_loss_generator_ema": round(res.ema.get("loss_generator", float("nan")), 5)}

    adapter.records[f"tdm{p.student_steps}"] = cached_stage(ctx, key, {"G": G, "F": F}, train)
    G.eval().requires_grad_(False)
    return ref, G, (F.eval().requires_grad_(False) if keep_fake else None), key


@register_adapter("tdm")
class TDMAdapter(FewStepAdapter):
    """The TDM student (the TDM-R1 baseline): Euler at any NFE, distilled for ``student_steps``."""

    Params = TDMParams

    def load(self, ctx: Any, budget: FewStepBudget) -> None:
        self.teacher, self.net, _, _ = load_student(self, ctx, budget, tdm_params_of(self.params))

    def drift_reference(self):
        """The teacher at 16 Euler steps (what the student was distilled from)."""
        return FrozenSampler(self.teacher, self.params.shift, "teacher"), 16
