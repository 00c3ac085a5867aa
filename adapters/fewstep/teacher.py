"""``teacher``: a class-conditional rectified flow (Liu et al., arXiv 2209.03003; the SD3 flow
convention of the TDM-R1 note) on Fashion-MNIST in [-1, 1], label dropout for classifier-free
guidance, sampled by deterministic Euler on the shifted grid at any NFE. The TDM students start
from it and it is their frozen reference.

Training: ``x_s = (1 - s) x0 + s eps`` with s uniform in [0, 1], loss ``||v(x_s, s, y) - (eps - x0)||^2``
(mean over pixels), Adam, cosine LR to 10 % after a 5 % warm-up, grad-clip 1. With the x0 head
(:mod:`net`) that loss is ``||x0_hat - x0||^2 / s^2``, whose weight is capped at ``x0_loss_weight_cap``.
After training, the plain v-loss is measured on test images at stratified s (``v_loss_test``; the
velocity head's floor there is (784 - width) / 784).
"""
from __future__ import annotations

from typing import Any

import torch

from adapters.fewstep.common import FewStepAdapter, cached_stage, new_net
from adapters.fewstep.net import VelocityNet, n_params
from adapters.fewstep.params import FewStepBudget, FlowParams, TeacherParams
from bench.registry import register_adapter
from bench.training import Schedule, Update, fit, minibatches, to_unit


def load_teacher(adapter: FewStepAdapter, ctx: Any, budget: FewStepBudget) -> VelocityNet:
    """The frozen teacher of ``adapter``'s (width, depth, label_dropout, seed, teacher budget), from
    the cache or trained now; records its stage record in ``adapter.records['teacher']``."""
    p: FlowParams = adapter.params
    net = new_net(p, adapter.num_classes, adapter.seed)
    key = adapter.teacher_key(ctx, budget)
    ctx.log_param("teacher_cache_key", key)
    adapter.records["teacher"] = cached_stage(ctx, key, {"teacher": net},
                                              lambda: train_teacher(net, ctx, p, budget, adapter.seed))
    return net.eval().requires_grad_(False)


def train_teacher(net: VelocityNet, ctx: Any, p: FlowParams, budget: FewStepBudget, seed: int) -> dict:
    """Train ``net`` in place (see the module docstring); returns {train_seconds, final_loss_ema, n_params}."""
    split = ctx.dataset.train.head(budget.train_images)
    x_all, y_all = to_unit(split.images), split.labels
    steps = budget.teacher_steps
    opt = torch.optim.Adam(net.parameters(), lr=budget.teacher_lr)
    update = Update(opt, Schedule("cosine", steps, warmup=max(1, steps // 20), floor=0.1), clip=1.0,
                    what="teacher (rectified flow)")
    gen = torch.Generator().manual_seed(seed + 17)
    null = net.num_classes

    def step_fn(step: int, idx: torch.Tensor):
        x0, y = x_all[idx], y_all[idx].clone()
        y[torch.rand(len(y), generator=gen) < p.label_dropout] = null
        eps = torch.randn(x0.shape, generator=gen)
        s = torch.rand(len(x0), generator=gen)
        x_s = (1 - s.view(-1, 1, 1, 1)) * x0 + s.view(-1, 1, 1, 1) * eps
        if net.parameterisation == "x0":
            w = s.clamp_min(1e-12).pow(-2).clamp_max(p.x0_loss_weight_cap)
            loss = (w * (net.head(x_s, s, y) - x0).pow(2).flatten(1).mean(1)).mean()
        else:
            loss = (net(x_s, s, y) - (eps - x0)).pow(2).mean()
        return loss, {"loss": loss}

    net.train()
    res = fit(step_fn, minibatches(len(x_all), budget.teacher_batch, steps, seed), steps, "teacher training",
              update, log=ctx.log_metric, log_prefix="train/teacher_", show_progress=ctx.progress)
    return {"train_seconds": round(res.seconds, 2), "final_loss_ema": round(res.ema.get("loss", float("nan")), 5),
            "v_loss_test": round(v_loss_test(net, ctx.dataset.test.head(2000), seed), 5),
            "v_loss_test_s_ge_0.1": round(v_loss_test(net, ctx.dataset.test.head(2000), seed, s_low=0.1), 5),
            "n_params": n_params(net), "steps": steps}


@torch.no_grad()
def v_loss_test(net: VelocityNet, split, seed: int, levels: int = 40, s_low: float = 0.0) -> float:
    """The plain v-loss mean ||v - (eps - x0)||^2 on ``split``'s images (labels kept), s stratified over
    ``levels`` bins of [s_low, 1] (bin midpoints, image i at bin i % levels), fixed noise. Below
    s = cap^-1/2 the x0 head is trained with the capped weight, so the bins there dominate at s_low 0."""
    was = net.training
    net.eval()
    gen = torch.Generator().manual_seed(seed + 19)
    x0, y = to_unit(split.images), split.labels.long()
    s = s_low + (1 - s_low) * (torch.arange(len(x0)) % levels + 0.5) / levels
    eps = torch.randn(x0.shape, generator=gen)
    tot = 0.0
    for i in range(0, len(x0), 500):
        sb = s[i: i + 500]
        x_s = (1 - sb.view(-1, 1, 1, 1)) * x0[i: i + 500] + sb.view(-1, 1, 1, 1) * eps[i: i + 500]
        tot += float((net(x_s, sb, y[i: i + 500]) - (eps[i: i + 500] - x0[i: i + 500])).pow(2).sum())
    net.train(was)
    return tot / x0.numel()


@register_adapter("teacher")
class TeacherAdapter(FewStepAdapter):
    """The multi-step reference: Euler at any NFE (``cfg_scale`` != 1: 2 NFE per step)."""

    Params = TeacherParams

    def load(self, ctx: Any, budget: FewStepBudget) -> None:
        self.net = load_teacher(self, ctx, budget)
