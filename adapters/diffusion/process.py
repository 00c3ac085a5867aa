"""Absorbing-state (masked) discrete diffusion: schedule, forward process, ELBO terms, reverse kernel.

MDLM (Sahoo et al. 2024, arXiv 2406.07524) Sec. 3: data x0 in {0..V-1}^N, mask id M = V.
Forward q(x_t | x0): each position independently stays x0^i with probability alpha_t, else
becomes M (alpha_0 = 1, alpha_1 ~ 0). Continuous-time negative ELBO (MDLM Eq. 10-11):

    NELBO(x0) = E_{t ~ U(0,1)} E_q [ w(t) * sum_{i: x_t^i = M} -log mu_theta^i(x_t)[x0^i] ],
    w(t) = -alpha_t' / (1 - alpha_t)

(x0-parameterisation with "carry-over" of unmasked tokens and zero mass on M, the SUBS
parameterisation, MDLM Sec. 3.2.3). Reverse kernel from t to s < t (MDLM Eq. 7): an unmasked
position is kept; a masked one becomes a value drawn from mu_theta with probability
(alpha_s - alpha_t) / (1 - alpha_t), else stays M. At s = 0 every position is unmasked.

Schedules (:data:`SCHEDULES`): ``linear`` alpha_t = 1 - t (w = 1/t); ``loglinear`` MDLM's
sigma(t) = -log(1 - (1 - eps) t), i.e. alpha_t = 1 - (1 - eps) t, eps = 1e-3 (w = 1/t as well,
but alpha_1 = eps: the negligible prior term -log p(x_1) is left out); ``cosine`` (MD4,
arXiv 2406.04329) alpha_t = 1 - cos(pi/2 (1 - t)).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from adapters.diffusion.params import ScheduleName  # noqa: F401  (re-exported)
from bench.adapter import count_nfe

SCHEDULES: tuple[str, ...] = ("linear", "loglinear", "cosine")
LOGLINEAR_EPS = 1e-3
T_MIN = 1e-5  # t is drawn in [T_MIN, 1]: w(t) ~ 1/t, the masked count ~ t N, their product stays finite


def alpha(t: torch.Tensor, schedule: str) -> torch.Tensor:
    """alpha_t, the probability that a position is still clean at time t (float tensor, t in [0, 1])."""
    if schedule == "linear":
        return 1 - t
    if schedule == "loglinear":
        return 1 - (1 - LOGLINEAR_EPS) * t
    if schedule == "cosine":
        return 1 - torch.cos(math.pi / 2 * (1 - t))
    raise ValueError(f"unknown schedule {schedule!r}; known: {', '.join(SCHEDULES)}")


def weight(t: torch.Tensor, schedule: str) -> torch.Tensor:
    """The ELBO weight w(t) = -alpha_t' / (1 - alpha_t) (float tensor, t in (0, 1])."""
    if schedule in ("linear", "loglinear"):
        return 1 / t
    if schedule == "cosine":
        return (math.pi / 2) * torch.sin(math.pi / 2 * (1 - t)) / torch.cos(math.pi / 2 * (1 - t)).clamp_min(1e-12)
    raise ValueError(f"unknown schedule {schedule!r}; known: {', '.join(SCHEDULES)}")


def sample_t(b: int, generator: torch.Generator, antithetic: bool = True) -> torch.Tensor:
    """float [b] times in [T_MIN, 1]; ``antithetic``: stratified (MDLM's low-discrepancy sampler)."""
    u = torch.rand(b, generator=generator)
    if antithetic:
        u = (u / b + torch.arange(b) / b) % 1.0
    return u.clamp_min(T_MIN)


def forward_mask(x0: torch.Tensor, t: torch.Tensor, schedule: str, mask_id: int,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """q(x_t | x0): x0 int64 [B, N], t float [B] -> (x_t int64 [B, N], mask bool [B, N]).

    Each position is masked independently with probability 1 - alpha_t.
    """
    p_mask = (1 - alpha(t, schedule)).unsqueeze(1)
    mask = torch.rand(x0.shape, generator=generator) < p_mask
    return x0.masked_fill(mask, mask_id), mask


def masked_nll(logits: torch.Tensor, x0: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum over masked positions of -log mu(x0): logits [B, N, V], x0 int64 [B, N], mask bool [B, N] -> [B] nats."""
    ce = F.cross_entropy(logits.transpose(1, 2), x0, reduction="none")  # [B, N]
    return (ce * mask).sum(1)


def mdm_loss(denoiser: Callable, x0: torch.Tensor, y: torch.Tensor | None, schedule: str, mask_id: int,
             generator: torch.Generator) -> tuple[torch.Tensor, dict]:
    """One-sample NELBO estimate of an MDM per image (nats, [B]) and its parts; MDLM Eq. 11."""
    t = sample_t(len(x0), generator)
    x_t, mask = forward_mask(x0, t, schedule, mask_id, generator)
    nll = weight(t, schedule) * masked_nll(denoiser(x_t, y), x0, mask)
    return nll, {"t": t, "masked": mask.float().mean()}


@torch.no_grad()
def reverse_step(x_t: torch.Tensor, logits: torch.Tensor, t: float, s: float, schedule: str, mask_id: int,
                 generator: torch.Generator) -> torch.Tensor:
    """One ancestral step t -> s < t (MDLM Eq. 7): x_t int64 [B, N], logits [B, N, V] -> x_s int64 [B, N].

    Unmasked positions are never changed; a masked one is unmasked w.p. (alpha_s - alpha_t) / (1 - alpha_t)
    (1 at s = 0) with a value drawn from softmax(logits). Draws use ``generator`` (CPU).
    """
    a_t = float(alpha(torch.tensor(t, dtype=torch.float64), schedule))
    a_s = 1.0 if s <= 0 else float(alpha(torch.tensor(s, dtype=torch.float64), schedule))
    p_unmask = 1.0 if s <= 0 else min(1.0, max(0.0, (a_s - a_t) / max(1 - a_t, 1e-12)))
    b, n, v = logits.shape
    cdf = torch.softmax(logits.float(), -1).cumsum(-1)  # inverse-CDF draw of one value per position
    values = (torch.rand(b, n, 1, generator=generator) > cdf[..., :-1]).sum(-1)
    unmask = (x_t == mask_id) & (torch.rand(b, n, generator=generator) < p_unmask)
    return torch.where(unmask, values, x_t)


@torch.no_grad()
def sample_chain(step_logits: Callable[[torch.Tensor, int], torch.Tensor], n: int, n_tokens: int, steps: int,
                 schedule: str, mask_id: int, generator: torch.Generator) -> torch.Tensor:
    """Ancestral sampling on the uniform grid t_k = k / steps, k = steps..1: int64 [n, n_tokens] in [0, V).

    ``step_logits(x_t, k)`` -> logits [n, N, V]: exactly one network evaluation per step (counted
    here with :func:`bench.adapter.count_nfe`), so the NFE per image equals ``steps``.
    """
    x = torch.full((n, n_tokens), mask_id, dtype=torch.long)
    for k in range(steps, 0, -1):
        count_nfe(n)
        x = reverse_step(x, step_logits(x, k), k / steps, (k - 1) / steps, schedule, mask_id, generator)
    return x
