"""``tdm_r1``: reinforcement learning of the TDM student with a non-differentiable reward
(TDM-R1, Luo et al., arXiv 2603.07700; algorithm as reconstructed from the official script in
docs/methods/tdm_r1.md, "One epoch", steps 1-3).

Per epoch: roll out ``groups x G`` deterministic K-step trajectories of the student (one class per
group), score the final uint8 images with a ``bench.rewards`` reward (detached, under inference
mode: no gradient can reach it), group-relative advantages ``A = (r - mean_group) / (std_all + 1e-4)``
clipped, the same A given to every state of the trajectory (per-step reward signals: the
trajectory is deterministic). Then, decoupled:

(b) surrogate reward model R (a copy of the teacher) trained by group DPO (DGPO) on a noised
    stored state y = x_{j'+1}, P(j') ~ j'+1 (``surrogate_states: final``: j' = K-1 only), noise and
    level shared within a group: per-sample DSM errors l (R) and l_ref (frozen teacher), group
    weight ``w_g = sigmoid(beta sum_g A (l - l_ref) / G)`` (stop-grad),
    ``L_R = (j'+1)/K [mean w A l + c ||v_R - v_ref||^2]``;
(c) generator: TDM's update (:func:`tdm.tdm_step`) plus ``reward_weight`` times the direction
    ``D_R = x0_R(x_rho) - x0_ref(x_rho)`` (the implicit reward's gradient) with normaliser
    ``n_R = mean|x0_hat - x0_R|``. With ``reward_weight = 0`` no surrogate is trained and the update
    is exactly TDM's (same random draws: the surrogate has its own generator).

The surrogate's per-sample errors are detached (no gradient) by the script's two guards: the
PPO-style clip against a slow "old" copy of R (an EMA, decay ``min(0.3, 0.001 + 0.001 k)``):
``rho = exp(l_old - l)``, detached if A > 0 and rho > 1 + c or A < 0 and rho < 1 - c (``ppo_clip``);
and the trust region to ref: detached if ``mean ||v_R - v_ref||^2 > trust_region`` while the sample
still moves in its advantage's direction, A (l_ref - l) > 0. The reference is the frozen teacher (the
script's default; the EMA copy drives only the clip).

Deviations (logged in the record): one rollout batch and one step of each optimiser per epoch
(the script accumulates over 12 batches x 2 steps).

``best_of_n = N >= 2``: no RL; the TDM student samples N candidates per image (candidate 0 from the
given noise, the others from noises seeded by it) and keeps the highest-reward one (NFE N x steps).
"""
from __future__ import annotations

import copy
from typing import Any, Callable

import torch

from adapters.fewstep import flow
from adapters.fewstep.common import FewStepAdapter, FrozenSampler, cached_stage, seed_of, stage_key
from adapters.fewstep.params import FewStepBudget, TDMR1Params
from adapters.fewstep.tdm import TDMState, draw_batch, load_student, tdm_params_of, tdm_step
from bench.adapter import Conditioning
from bench.registry import register_adapter
from bench.training import Update, fit, to_uint8

RewardFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(uint8 images [B, 1, 28, 28], labels int64 [B]) -> float64 rewards [B]."""

R1_FIELDS = ("reward", "reward_weight", "surrogate_states", "beta_dpo", "surrogate_ref_weight", "surrogate_cfg",
             "t_min_generator", "t_min_surrogate", "adv_clip", "trust_region", "ppo_clip")


def bench_reward(name: str) -> RewardFn:
    """The registered ``bench.rewards`` reward ``name`` as a :data:`RewardFn` (scored by the harness's
    ``score``: detached CPU uint8 under inference mode)."""
    from bench.rewards import score  # the rewards registry (bench/rewards/)

    def fn(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(score(name, images, Conditioning(labels=labels)), dtype=torch.float64)

    return fn


def advantages(r: torch.Tensor, group_size: int, clip: float) -> torch.Tensor:
    """Group-relative advantages float32 [B] of rewards r [B] (groups = consecutive ``group_size``):
    ``(r - group mean) / (std over all + 1e-4)``, clipped to [-clip, clip]."""
    g = r.double().view(-1, group_size)
    a = (g - g.mean(1, keepdim=True)) / (r.double().std(unbiased=False) + 1e-4)
    return a.clamp(-clip, clip).flatten().float()


class R1Hooks:
    """The TDM-R1 additions to a TDM iteration: rewards and advantages, the surrogate update, D_R."""

    def __init__(self, p: TDMR1Params, R: torch.nn.Module, ref: torch.nn.Module, update_R: Update | None,
                 reward: RewardFn, group_size: int, gen: torch.Generator):
        self.p, self.R, self.ref, self.update_R, self.reward = p, R, ref, update_R, reward
        self.G, self.gen, self.step = group_size, gen, 0
        self.R_old = copy.deepcopy(R).requires_grad_(False) if p.ppo_clip > 0 else None

    def after_fake(self, states: list[torch.Tensor], y: torch.Tensor) -> dict:
        r = self.reward(to_uint8(states[-1]).detach(), y)
        self.A = advantages(r, self.G, self.p.adv_clip)
        parts = {"reward": float(r.mean())}
        if self.p.reward_weight > 0:
            parts.update(self.surrogate_update(states, y))
        return parts

    def surrogate_update(self, states: list[torch.Tensor], y: torch.Tensor) -> dict:
        p, K, G = self.p, len(states) - 1, self.G
        ts = flow.grid(K, p.shift)
        if p.surrogate_states == "final":
            jp = K - 1
        else:
            jp = int(torch.multinomial(torch.arange(1, K + 1, dtype=torch.float), 1, generator=self.gen))
        y_state, s_y = states[jp + 1], ts[jp + 1]
        n_groups = len(y) // G
        tau = flow.draw_times(n_groups, max(s_y, p.t_min_surrogate), 0.0, p.shift, self.gen).repeat_interleave(G)
        eps = torch.randn(n_groups, 1, 28, 28, generator=self.gen).repeat_interleave(G, 0)
        a, b = flow.renoise_coefs(s_y, tau)
        x_tau = a * y_state + b * eps
        target = flow.state_velocity_target(y_state, s_y, tau, eps)
        with torch.no_grad():
            v_ref = self.ref(x_tau, tau, y)
            l_ref = (v_ref - target).pow(2).flatten(1).mean(1)
        v_R = self.R(x_tau, tau, y)
        l = (v_R - target).pow(2).flatten(1).mean(1)
        A = self.A
        with torch.no_grad():
            w = torch.sigmoid(p.beta_dpo * (A * (l - l_ref)).view(-1, G).sum(1) / G).repeat_interleave(G)
            frozen = torch.zeros_like(l, dtype=torch.bool)
            if self.R_old is not None:  # PPO-style clip against the slow copy
                rho = torch.exp((self.R_old(x_tau, tau, y) - target).pow(2).flatten(1).mean(1) - l)
                frozen |= ((A > 0) & (rho > 1 + p.ppo_clip)) | ((A < 0) & (rho < 1 - p.ppo_clip))
            if p.trust_region > 0:  # trust region to ref
                far = (v_R - v_ref).pow(2).flatten(1).mean(1) > p.trust_region
                frozen |= far & (A * (l_ref - l) > 0)
        l_used = torch.where(frozen, l.detach(), l)
        weight = (jp + 1) / K if p.surrogate_states == "trajectory" else 1.0
        loss = weight * ((w * A * l_used).mean() + p.surrogate_ref_weight * (v_R - v_ref).pow(2).mean())
        self.update_R.step(loss, self.step, zero_grad_after=True)
        self.step += 1
        if self.R_old is not None:  # old <- d old + (1 - d) R, d = min(0.3, 0.001 + 0.001 k)
            d = min(0.3, 0.001 + 0.001 * self.step)
            with torch.no_grad():
                for po, pr in zip(self.R_old.parameters(), self.R.parameters()):
                    po.mul_(d).add_(pr.detach(), alpha=1 - d)
        agree = ((-(l - l_ref)).sign() == A.sign()).float()[A != 0].mean()
        return {"loss_surrogate": float(loss.detach()), "surrogate_sign_agreement": float(agree.nan_to_num(0.5)),
                "surrogate_detached": float(frozen.float().mean())}

    def generator_terms(self, x0_hat, x_nxt, s_next, y):
        p, G = self.p, self.G
        if p.reward_weight == 0:
            return []
        n_groups = len(y) // G
        with torch.no_grad():
            rho = flow.draw_times(len(y), max(s_next, p.t_min_generator), 0.0, p.shift, self.gen)
            eps = torch.randn(n_groups, 1, 28, 28, generator=self.gen).repeat_interleave(G, 0)
            x_rho = flow.renoise(x_nxt.detach(), s_next, rho, eps)
            x0_R = flow.x0_of(self.R, x_rho, rho, y, p.surrogate_cfg)
            D_R = x0_R - flow.x0_of(self.ref, x_rho, rho, y)
            n_R = (x0_hat - x0_R).abs().flatten(1).mean(1).clamp_min(1e-4)
        return [(p.reward_weight, D_R, n_R)]


def r1_train(st: TDMState, hooks: R1Hooks, p: TDMR1Params, budget: FewStepBudget, num_classes: int, seed: int,
             ctx: Any) -> dict:
    """``budget.r1_epochs`` TDM-R1 epochs on ``st`` in place; returns the record."""
    batches = torch.Generator().manual_seed(seed + 37)
    n = budget.r1_groups * budget.r1_group_size

    def step_fn(step: int, _):
        z, y = draw_batch(n, budget.r1_group_size, num_classes, batches)
        return None, tdm_step(st, p, z, y, hooks)

    res = fit(step_fn, iter(int, 1), budget.r1_epochs, "TDM-R1", log=ctx.log_metric, log_prefix="train/r1_",
              log_every=10, show_progress=ctx.progress)
    hist = res.history.get("reward", [float("nan")])
    k = max(1, len(hist) // 5)
    return {"train_seconds": round(res.seconds, 2), "epochs": budget.r1_epochs,
            "train_reward_first": round(sum(hist[:k]) / k, 4), "train_reward_last": round(sum(hist[-k:]) / k, 4),
            "surrogate_sign_agreement_ema": round(res.ema.get("surrogate_sign_agreement", float("nan")), 4),
            "surrogate_detached_ema": round(res.ema.get("surrogate_detached", float("nan")), 4),
            "deviation": "one rollout batch and one step per optimiser per epoch"}


@register_adapter("tdm_r1")
class TDMR1Adapter(FewStepAdapter):
    """TDM-R1 on the TDM student, or (``best_of_n``) best-of-N sampling of that student."""

    Params = TDMR1Params
    reward_fn: RewardFn | None = None  # tests may set one; else bench.rewards' ``params.reward``

    def reward_of(self) -> RewardFn:
        return self.reward_fn if self.reward_fn is not None else bench_reward(self.params.reward)

    def load(self, ctx: Any, budget: FewStepBudget) -> None:
        p = self.params
        self.teacher, student, fake, base_key = load_student(self, ctx, budget, tdm_params_of(p), keep_fake=True)
        self.student = student
        if p.best_of_n:
            self.net = student
            return
        st = TDMState.start(self.teacher, student, budget, self.seed + 1)
        st.F.load_state_dict(fake.state_dict())  # TDM-R1 continues the TDM run: its fake score too
        R = copy.deepcopy(self.teacher).requires_grad_(True).train()
        update_R = Update(torch.optim.Adam(R.parameters(), lr=budget.lr_surrogate, betas=(0.9, 0.999)), clip=1.0,
                          what="TDM-R1 surrogate")
        hooks = R1Hooks(p, R, self.teacher, update_R, self.reward_of(), budget.r1_group_size,
                        torch.Generator().manual_seed(self.seed + 41))
        key = stage_key(base_key, "tdm_r1", {**{k: getattr(p, k) for k in R1_FIELDS}, "budget": {
            k: getattr(budget, k) for k in ("r1_epochs", "r1_groups", "r1_group_size", "lr_generator", "lr_fake",
                                            "lr_surrogate")}})
        ctx.log_param("tdm_r1_cache_key", key)
        self.records["tdm_r1"] = cached_stage(ctx, key, {"G": st.G, "R": R},
                                              lambda: r1_train(st, hooks, p, budget, self.num_classes, self.seed, ctx))
        self.net = st.G.eval().requires_grad_(False)

    def drift_reference(self):
        """The TDM student it starts from, at its ``student_steps``."""
        return FrozenSampler(self.student, self.params.shift, "tdm"), self.params.student_steps

    def generate(self, z, y, steps, control):
        n = self.params.best_of_n
        if not n:
            return super().generate(z, y, steps, control)
        reward = self.reward_of()
        best, best_r = None, None
        for k in range(n):
            zk = z if k == 0 else torch.randn(z.shape, generator=torch.Generator().manual_seed(seed_of(z, k)))
            x = super().generate(zk, y, steps, control)
            r = reward(to_uint8(x), y)
            if best is None:
                best, best_r = x, r
            else:
                better = r > best_r
                best = torch.where(better.view(-1, 1, 1, 1), x, best)
                best_r = torch.maximum(best_r, r)
        return best
