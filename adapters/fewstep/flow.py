"""Rectified-flow pieces shared by the family: the shifted time grid, x0-predictions, re-noising
between flow times, and the deterministic Euler sampler whose every network call is counted.

Convention (SD3 / TDM-R1 note): ``x_s = (1 - s) x0 + s eps``, ``v = eps - x0``,
``x0_hat = x_s - s v``; s = 1 is pure noise. Shift ``S(u) = k u / (1 + (k - 1) u)``.
"""
from __future__ import annotations

from typing import Callable

import torch

from bench.adapter import count_nfe

Net = Callable[..., torch.Tensor]


def shift(u: torch.Tensor | float, k: float) -> torch.Tensor | float:
    """S(u) = k u / (1 + (k - 1) u): [0, 1] -> [0, 1], increasing; k = 1 is the identity."""
    return k * u / (1 + (k - 1) * u)


def unshift(s: torch.Tensor | float, k: float) -> torch.Tensor | float:
    """S^-1(s) = s / (k - (k - 1) s)."""
    return s / (k - (k - 1) * s)


def grid(steps: int, k: float) -> list[float]:
    """``steps + 1`` flow times from 1 down to 0: s_j = S(1 - j / steps) (k = 3, steps = 4: 1, .9, .75, .5, 0)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return [float(shift(1 - j / steps, k)) for j in range(steps + 1)]


def velocity(net: Net, x: torch.Tensor, s: torch.Tensor | float, y: torch.Tensor, cfg: float = 1.0,
             inject: list[torch.Tensor] | None = None) -> torch.Tensor:
    """v [B, 1, 28, 28] of ``net`` at x [B, 1, 28, 28], time s (float or [B]) and labels y int64 [B]
    (the null class = ``net.num_classes``). ``cfg`` != 1: v_u + cfg (v_c - v_u) in one forward over
    2B images (2 evaluations per image). Each call is reported with :func:`count_nfe`."""
    s = torch.as_tensor(s, dtype=x.dtype, device=x.device).expand(len(x)).contiguous()
    if cfg == 1.0:
        count_nfe(len(x))
        return net(x, s, y, inject)
    null = torch.full_like(y, net.num_classes)
    both = net(torch.cat([x, x]), torch.cat([s, s]), torch.cat([y, null]),
               None if inject is None else [torch.cat([a, a]) for a in inject])
    count_nfe(2 * len(x))
    v_c, v_u = both.chunk(2)
    return v_u + cfg * (v_c - v_u)


def x0_of(net: Net, x: torch.Tensor, s: torch.Tensor | float, y: torch.Tensor, cfg: float = 1.0) -> torch.Tensor:
    """x0-prediction x - s v of ``net`` (shapes as :func:`velocity`; s float or [B])."""
    s_b = torch.as_tensor(s, dtype=x.dtype).reshape(-1, 1, 1, 1) if torch.is_tensor(s) else s
    return x - s_b * velocity(net, x, s, y, cfg)


def renoise(x: torch.Tensor, s_from: float, s_to: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """A sample of q(x_{s_to} | x_{s_from} = x) for s_to [B] > s_from: ``a x + b eps`` with
    ``a = (1 - s_to) / (1 - s_from)``, ``b = sqrt(s_to^2 - (a s_from)^2)`` (TDM-R1 note, step a)."""
    a, b = renoise_coefs(s_from, s_to)
    return a * x + b * eps


def renoise_coefs(s_from: float, s_to: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(a, b) of :func:`renoise`, each [B, 1, 1, 1]."""
    s_to = s_to.reshape(-1, 1, 1, 1)
    a = (1 - s_to) / (1 - s_from)
    return a, (s_to ** 2 - (a * s_from) ** 2).clamp_min(1e-12).sqrt()


def state_velocity_target(y: torch.Tensor, s_y: float, tau: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The velocity target of denoising score matching on ``x_tau = a y + b eps`` (:func:`renoise` of a
    state y [B, 1, 28, 28] at flow time s_y < 1 to tau [B]): the velocity implied by the score of
    q(x_tau | y), ``-y / (1 - s_y) + eps (tau + s_y^2 a / (1 - s_y)) / b`` (TDM-R1 note, step b); at
    s_y = 0 it is ``eps - y``. A net regressed on it models the law of the re-noised states themselves."""
    a, b = renoise_coefs(s_y, tau)
    return -y / (1 - s_y) + eps * (tau.reshape(-1, 1, 1, 1) + s_y ** 2 * a / (1 - s_y)) / b


def draw_times(n: int, s_low: float, gap: float, k: float, gen: torch.Generator) -> torch.Tensor:
    """n flow times in (s_low, 1]: u uniform in [S^-1(s_low) + gap, 1], then shifted (float32 [n])."""
    u_low = min(float(unshift(s_low, k)) + gap, 1 - 1e-3)
    u = u_low + (1 - u_low) * torch.rand(n, generator=gen)
    return shift(u, k)


def euler(net: Net, z: torch.Tensor, y: torch.Tensor, steps: int, k: float, cfg: float = 1.0,
          inject: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Deterministic Euler ODE from s = 1 (x = z [B, 1, 28, 28]) to 0 on :func:`grid`; returns x0
    (float, unclamped). NFE = steps (2 steps with cfg != 1)."""
    ts = grid(steps, k)
    x = z
    for j in range(steps):
        x = x - (ts[j] - ts[j + 1]) * velocity(net, x, ts[j], y, cfg, inject)
    return x


def rollout(net: Net, z: torch.Tensor, y: torch.Tensor, ts: list[float]) -> list[torch.Tensor]:
    """The states x_{t_0} = z, ..., x_{t_K} of the deterministic Euler trajectory on ``ts`` (no grad)."""
    with torch.no_grad():
        states = [z]
        for j in range(len(ts) - 1):
            states.append(states[-1] - (ts[j] - ts[j + 1]) * velocity(net, states[-1], ts[j], y))
    return states
