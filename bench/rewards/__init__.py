"""Rewards: non-differentiable scores of generated images, one registry (like the metrics').

A reward is a plain function ``r(images, cond) -> float64 [B]`` (optionally ``r(images, cond, params)``
when it registers a strict pydantic ``Params`` model), registered with its range, its direction and a
provenance record::

    from bench.rewards import register_reward

    def brightness(images, cond):            # uint8 [B, C, H, W] -> float64 [B]
        return images.double().mean((1, 2, 3)) / 255

    register_reward("brightness", brightness, range=(0.0, 1.0), higher_is_better=True)

* ``images``: uint8 [B, C, H, W] in [0, 255], a *detached CPU copy* (the harness's, see :func:`score`);
* ``cond``: :class:`bench.adapter.Conditioning`; ``cond.labels`` int64 [B] (the requested classes) or
  None; ``cond.extra["target"]``: a per-reward target where one is needed (an int, or int64 [B]: e.g.
  the component count of ``components``);
* returns float64 [B] (a tensor, a numpy array or a list), every value inside ``range``.

The rewards are called only through :func:`score`, which hands them detached CPU uint8 copies under
``torch.inference_mode``, checks the shape and range of what comes back and returns a fresh float64
tensor that can carry no gradient: they are non-differentiable *by construction*, which is what
TDM-R1 (arXiv 2603.07700, Sec. 3) is about (its surrogate reward model is the only differentiable path).

Built in (:mod:`bench.rewards.builtin`, offline, nothing downloaded): ``judge`` / ``judge_ood``
(a locally trained Fashion-MNIST judge gives the requested class with probability >= a threshold:
binary; in-domain and out-of-domain judges are different networks and seeds, :mod:`bench.rewards.judges`),
``jpeg`` (JPEG compressibility at a fixed quality, Pillow: continuous) and ``components``
(``scipy.ndimage.label`` connected-component count == target: binary). A reward backed by a local model
file verifies the file's sha256 with :func:`verified_file` before loading it.

This module imports no torch at import time (``bench validate`` checks reward names without it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, ValidationError

from bench.errors import BenchError


class RewardError(BenchError):
    """An unknown reward, bad reward parameters, a reward returning a wrong shape or an out-of-range value."""


class RewardParams(BaseModel):
    """Base of a reward's ``Params`` model: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Reward:
    """A registered reward. ``range``: (lo, hi), the closed interval every value lies in (±inf allowed);
    ``higher_is_better``: its direction; ``binary``: values are 0 or 1; ``provenance``: what defines it
    (for a learned judge: instrument id and sha256; for a model file: path and sha256; a dict, or a
    function of the validated params returning one); ``ood``: the
    rewards evaluated beside it as out-of-domain checks by default (``reward_nfe`` metric);
    ``Params``: the strict model of its options (None: ``fn(images, cond)`` takes none)."""

    name: str
    fn: Callable[..., Any]
    range: tuple[float, float]
    higher_is_better: bool = True
    binary: bool = False
    provenance: dict[str, Any] | Callable[[Any], dict[str, Any]] = field(default_factory=dict)
    ood: tuple[str, ...] = ()
    Params: type[RewardParams] | None = None
    description: str = ""

    def params(self, values: dict[str, Any] | RewardParams | None = None) -> RewardParams | None:
        """``values`` validated against :attr:`Params` (RewardError naming the reward and field otherwise)."""
        if self.Params is None:
            if values:
                raise RewardError(f"reward {self.name!r} takes no parameters, got {sorted(dict(values))}")
            return None
        if isinstance(values, self.Params):
            return values
        try:
            return self.Params.model_validate(dict(values or {}))
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "(params)"
            raise RewardError(f"reward {self.name!r}: params.{where}: {err['msg']}") from None

    def record(self, values: dict[str, Any] | RewardParams | None = None) -> dict[str, Any]:
        """Provenance for logging: name, range, direction, parameters and :attr:`provenance`."""
        p = self.params(values)
        prov = self.provenance(p) if callable(self.provenance) else self.provenance
        return {"reward": self.name, "range": list(self.range), "higher_is_better": self.higher_is_better,
                "binary": self.binary, **({"params": p.model_dump(mode="json")} if p is not None else {}), **prov}


REWARDS: dict[str, Reward] = {}
_builtins_loaded = False


def register_reward(name: str, fn: Callable[..., Any] | None = None, *, range: tuple[float, float],
                    higher_is_better: bool = True, binary: bool = False,
                    provenance: dict[str, Any] | Callable[[Any], dict[str, Any]] | None = None,
                    ood: tuple[str, ...] | list[str] = (), Params: type[RewardParams] | None = None,
                    description: str = "") -> Any:
    """Register ``fn`` as reward ``name``; returns the :class:`Reward` (without ``fn``: a decorator).

    ``range`` (lo, hi) with lo < hi; a binary reward's range must be (0, 1). Registering another
    function under a taken name is a :class:`RewardError` (re-registering the same one is a no-op).
    """
    if fn is None:
        def deco(f: Callable[..., Any]) -> Callable[..., Any]:
            register_reward(name, f, range=range, higher_is_better=higher_is_better, binary=binary,
                            provenance=provenance, ood=ood, Params=Params, description=description)
            return f

        return deco
    lo, hi = (float(v) for v in range)
    if not lo < hi:
        raise RewardError(f"reward {name!r}: range must be (lo, hi) with lo < hi, got {range}")
    if binary and (lo, hi) != (0.0, 1.0):
        raise RewardError(f"reward {name!r}: a binary reward's range is (0, 1), got {range}")
    r = Reward(name, fn, (lo, hi), bool(higher_is_better), bool(binary),
               provenance if callable(provenance) else dict(provenance or {}), tuple(ood), Params,
               description or (fn.__doc__ or "").strip().split("\n")[0])
    old = REWARDS.get(name)
    if old is not None and old.fn is not fn:
        raise RewardError(f"reward {name!r} is registered twice ({old.fn.__module__}.{old.fn.__qualname__} and "
                          f"{fn.__module__}.{fn.__qualname__})")
    REWARDS[name] = r
    return r


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        from bench.rewards import builtin  # noqa: F401  (registers the built-in rewards; light)
        _builtins_loaded = True


def known_rewards() -> list[str]:
    """Every registered reward name, sorted."""
    _load_builtins()
    return sorted(REWARDS)


def get_reward(name: str) -> Reward:
    """The reward ``name``; :class:`RewardError` listing the registered ones otherwise."""
    _load_builtins()
    if name not in REWARDS:
        raise RewardError(f"unknown reward {name!r}; registered: {', '.join(sorted(REWARDS)) or '(none)'} "
                          "(bench.rewards.register_reward)")
    return REWARDS[name]


def score(reward: str | Reward, images: Any, cond: Any = None,
          params: dict[str, Any] | RewardParams | None = None) -> Any:
    """Reward of each image: float64 [B] (a CPU tensor with no autograd history), inside ``reward.range``.

    ``images``: uint8 [B, C, H, W] (any device; a float tensor, e.g. a generator's output that still
    carries gradients, is a ValueError: quantise to uint8 first). ``cond``: a
    :class:`bench.adapter.Conditioning`, an int64 [B] labels tensor, or None. ``params``: the reward's
    options (validated against its ``Params``). The reward gets a detached CPU copy under
    ``torch.inference_mode`` (so nothing it does can reach the caller's autograd graph); what it returns
    must have B finite values in range (RewardError otherwise). Backpropagating through the result fails
    (it does not require grad).
    """
    import torch

    from bench.adapter import Conditioning

    r = reward if isinstance(reward, Reward) else get_reward(reward)
    p = r.params(params)
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        got = f"{getattr(images, 'dtype', type(images).__name__)} {tuple(getattr(images, 'shape', ()))}"
        raise ValueError(f"reward {r.name!r}: expected uint8 images [B, C, H, W], got {got} (rewards score "
                         "quantised images; they are not differentiable)")
    cond = Conditioning.of(cond)
    n = len(images)
    if cond.labels is not None and tuple(cond.labels.shape) != (n,):
        raise ValueError(f"reward {r.name!r}: cond.labels must be int64 [{n}], got {tuple(cond.labels.shape)}")
    x = images.detach().to("cpu", copy=True)
    c = Conditioning(None if cond.labels is None else cond.labels.detach().to("cpu", copy=True), dict(cond.extra))
    with torch.inference_mode():
        raw = r.fn(x, c) if p is None else r.fn(x, c, p)
        if isinstance(raw, torch.Tensor):
            assert raw.grad_fn is None and not raw.requires_grad, f"reward {r.name!r} returned a tensor with a gradient"
            raw = raw.detach().cpu().numpy()
    import numpy as np

    out = torch.tensor(np.asarray(raw, dtype=np.float64).reshape(-1))  # a fresh tensor, outside inference mode
    if tuple(out.shape) != (n,):
        raise RewardError(f"reward {r.name!r} returned {tuple(out.shape)} values for {n} images")
    lo, hi = r.range
    bad = ~torch.isfinite(out) | (out < lo) | (out > hi)
    if r.binary:
        bad |= (out != 0) & (out != 1)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0])
        raise RewardError(f"reward {r.name!r}: value {float(out[i])} of image {i} is outside its range "
                          f"[{lo}, {hi}]" + (" (binary: 0 or 1)" if r.binary else ""))
    assert not out.requires_grad and out.grad_fn is None
    return out


def verified_file(path: str | Path, sha256: str, what: str = "reward model") -> Path:
    """``path`` as a Path once its sha256 is ``sha256`` (hex); RewardError naming the file otherwise.

    Call it before loading a model a reward is backed by (e.g. ``safetensors.torch.load_file``), and put
    ``{"file": str(path), "sha256": sha256}`` into the reward's ``provenance``.
    """
    from bench.context import sha256_file

    p = Path(path).expanduser()
    if not p.is_file():
        raise RewardError(f"{what}: {p} does not exist")
    got = sha256_file(p)
    if got != sha256.lower():
        raise RewardError(f"{what}: {p} has sha256 {got}, expected {sha256}: not the file the reward was "
                          "registered with (replaced or corrupt)")
    return p


def mean_ci95(values: Any, binary: bool) -> tuple[float, float, float, float]:
    """(mean, standard error, 95 % CI low, high) of per-image rewards float64 [n], n >= 1.

    Binary rewards: Wilson score interval (``scipy.stats.binomtest(...).proportion_ci("wilson")``);
    continuous: Student t interval (``scipy.stats.t``, n - 1 dof; the mean itself when n < 2).
    Standard error: sqrt(p (1 - p) / n) resp. sample std (ddof 1) / sqrt(n).
    """
    import numpy as np
    from scipy import stats

    v = np.asarray(values, dtype=np.float64).reshape(-1)
    n = len(v)
    if n == 0:
        raise RewardError("mean_ci95: no values")
    m = float(v.mean())
    if binary:
        k = int(round(float(v.sum())))
        ci = stats.binomtest(k, n).proportion_ci(0.95, method="wilson")
        return m, math.sqrt(max(m * (1 - m), 0.0) / n), float(ci.low), float(ci.high)
    if n < 2:
        return m, 0.0, m, m
    se = float(v.std(ddof=1) / math.sqrt(n))
    h = float(stats.t.ppf(0.975, n - 1)) * se
    return m, se, m - h, m + h
