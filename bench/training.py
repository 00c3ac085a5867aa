"""The training kit: one fit loop, one LR schedule, one autoregressive sampler, and small helpers.

Every trainer in genbench (tokenizers, AR priors, the prologue path, the Fashion-MNIST
instrument classifier, the PEFT fine-tuning loop, the tiny-Qwen3 pre-training) runs through
:func:`fit` with an :class:`Update` per optimiser, so a training step always does, in this order::

    loss = step_fn(...)          # forward (the trainer's own code, its own RNG draws)
    check_loss(loss)             # NaN/inf -> TrainingDiverged naming what and the step
    opt.zero_grad(set_to_none=True); loss.backward()
    clip_grad_norm_(params, clip)    # if clip is set
    opt.step(); scheduler.step()

:class:`Schedule` is the only LR-schedule implementation (multipliers of the optimiser's base
learning rate per optimiser step). :func:`sample_autoregressive` is the only ancestral sampler
(per-position temperature and allowed-code masks). All of it is deterministic given the seeds;
the kit draws no random numbers itself except the sampler's (from its own seeded generator).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Literal, Sequence

import torch
from tqdm.auto import tqdm

from bench.errors import BenchError


class TrainingDiverged(BenchError):
    """A loss became NaN/inf; the message names what was being trained and the step."""


def minibatches(n: int, batch_size: int, steps: int, seed: int) -> Iterator[torch.Tensor]:
    """Yield ``steps`` index tensors (int64 [batch_size]) covering [0, n) in reshuffled epochs."""
    g = torch.Generator().manual_seed(seed)
    perm, pos = torch.randperm(n, generator=g), 0
    for _ in range(steps):
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, generator=g), 0
        yield perm[pos : pos + batch_size]
        pos += batch_size


def epoch_minibatches(n: int, batch_size: int, epochs: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Yield index tensors (int64 [<= batch_size]) for ``epochs`` passes over [0, n), the last batch short.

    One ``torch.randperm(n, generator=generator)`` per epoch, drawn when the epoch starts;
    ``ceil(n / batch_size)`` batches per epoch.
    """
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for i in range(0, n, batch_size):
            yield order[i : i + batch_size]


def check_loss(loss: torch.Tensor, what: str, step: int) -> float:
    """Return ``loss`` as float; raise :class:`TrainingDiverged` if it is NaN/inf."""
    v = float(loss.detach())
    if not math.isfinite(v):
        raise TrainingDiverged(
            f"{what}: loss is {v} at step {step}; lower the learning rate in the suite's budget or check the inputs"
        )
    return v


def progress(iterable, total: int, desc: str, enabled: bool = True):
    return tqdm(iterable, total=total, desc=desc, disable=not enabled, leave=False, mininterval=2.0)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, C, H, W] in [0, 255] -> floats in [-1, 1] of torch's default dtype (float32, or
    float64 in a suite with ``precision: float64``)."""
    return images.to(torch.get_default_dtype()).div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] (clamped) -> uint8 [0, 255]."""
    return x.clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)


# -- learning-rate schedule ---------------------------------------------------------------------
@dataclass(frozen=True)
class Schedule:
    """LR multiplier per optimiser step ``s`` (0-based; the learning rate is ``base_lr * multiplier(s)``).

    ``kind``:

    - ``constant``: 1 (``warmup`` still applies).
    - ``cosine``: linear warm-up, then ``floor + (1 - floor) * (1 + cos(pi * frac)) / 2``.
    - ``linear``: linear warm-up, then ``max(floor, 1 - (1 - floor) * frac)``.
    - ``torch_cosine``: :class:`torch.optim.lr_scheduler.CosineAnnealingLR` (``T_max = total``,
      ``eta_min = 0``; no warm-up, no floor). torch updates it recursively, so its values equal
      :meth:`multiplier` only up to float rounding; kept because the shipped ``fmnist-cnn-v1``
      weights were trained with it.

    Warm-up: ``(s + 1) / warmup`` for ``s < warmup`` (``(s + 1) / (warmup + 1)`` with
    ``warmup_plus_one``, the PEFT recipe's). ``frac = min(1, (s - warmup) / max(1, total - warmup))``.
    ``warmup`` may exceed ``total`` (then the whole run is warm-up).
    """

    kind: Literal["constant", "cosine", "linear", "torch_cosine"]
    total: int = 0
    warmup: int = 0
    floor: float = 0.0
    warmup_plus_one: bool = False

    def __post_init__(self):
        if self.kind not in ("constant", "cosine", "linear", "torch_cosine"):
            raise ValueError(f"Schedule.kind: unknown {self.kind!r}; known: constant, cosine, linear, torch_cosine")
        if self.total < 0 or self.warmup < 0:
            raise ValueError(f"Schedule: total ({self.total}) and warmup ({self.warmup}) must be >= 0")
        if not 0.0 <= self.floor <= 1.0:
            raise ValueError(f"Schedule.floor: {self.floor} is not in [0, 1]")
        if self.kind == "torch_cosine" and (self.warmup or self.floor or self.total < 1):
            raise ValueError("Schedule 'torch_cosine' takes total >= 1 and no warmup/floor")

    def multiplier(self, step: int) -> float:
        """The LR multiplier (float, unitless) at optimiser step ``step``."""
        if self.kind == "torch_cosine":
            return 0.5 * (1 + math.cos(math.pi * step / self.total))
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1 if self.warmup_plus_one else self.warmup)
        if self.kind == "constant":
            return 1.0
        frac = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        if self.kind == "cosine":
            return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * frac))
        return max(self.floor, 1 - (1 - self.floor) * frac)

    def scheduler(self, opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        """A torch scheduler over ``opt`` (sets the step-0 learning rate now; step it after each opt.step())."""
        if self.kind == "torch_cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.total)
        return torch.optim.lr_scheduler.LambdaLR(opt, self.multiplier)


# -- one optimiser's update ---------------------------------------------------------------------
class Update:
    """The update half of a training step for one optimiser: NaN check, backward, clip, step, schedule.

    ``params`` (default: the optimiser's parameters, in its order) are what ``clip`` (max global
    L2 norm of their gradients; None = no clipping) applies to. ``schedule`` None = constant LR.
    ``what`` names the model in :class:`TrainingDiverged` messages.
    """

    def __init__(self, opt: torch.optim.Optimizer, schedule: Schedule | None = None, clip: float | None = None,
                 params: Iterable[torch.nn.Parameter] | None = None, what: str = "training"):
        self.opt, self.clip, self.what = opt, clip, what
        self.params = list(params) if params is not None else [p for g in opt.param_groups for p in g["params"]]
        self.sched = schedule.scheduler(opt) if schedule is not None else None

    def step(self, loss: torch.Tensor, step: int, zero_grad_after: bool = False) -> float:
        """Apply one update from scalar ``loss``; return its value (float). Raises TrainingDiverged.

        ``zero_grad_after`` drops the gradients after the step (so none linger into another
        model's step that shares a graph or a parameter view).
        """
        v = check_loss(loss, self.what, step)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.opt.step()
        if zero_grad_after:
            self.opt.zero_grad(set_to_none=True)
        if self.sched is not None:
            self.sched.step()
        return v


# -- the fit loop -------------------------------------------------------------------------------
EMA_KEEP, EMA_NEW = 0.98, 0.02  # loss EMA: ema = 0.98 * ema + 0.02 * value (two literals, bit-stable)


@dataclass
class FitResult:
    """What :func:`fit` returns: per-part EMA and last values, per-step history, wall seconds."""

    ema: dict[str, float] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)
    history: dict[str, list[float]] = field(default_factory=dict)
    steps: int = 0
    seconds: float = 0.0


def fit(step_fn: Callable[[int, object], tuple[torch.Tensor | None, dict]], batches: Iterable, steps: int,
        what: str, update: Update | None = None, *, log: Callable[[str, float, int], None] | None = None,
        log_prefix: str = "", log_every: int = 50, log_last: bool = False, show_progress: bool = True,
        checkpoint: Callable[[int], None] | None = None, checkpoint_every: int = 0) -> FitResult:
    """Run ``step_fn`` over ``batches`` (at most ``steps`` of them); return a :class:`FitResult`.

    ``step_fn(step, batch) -> (loss, parts)``: ``loss`` a scalar tensor that ``update`` steps
    (see :meth:`Update.step`), or None when ``step_fn`` steps its own optimisers (alternating
    schemes: give no ``update`` then); ``parts`` maps names to scalar tensors or floats (e.g.
    loss terms, nats) that are tracked as EMA and history.

    Every ``log_every`` steps (and at the last step with ``log_last``) each part is logged as
    ``log(log_prefix + name, value, step)`` and the progress bar shows the parts' EMA.
    ``checkpoint(step)`` runs after every ``checkpoint_every``-th update (0: never); when it returns
    True, training stops there (early stopping; ``FitResult.steps`` says how many steps ran).
    """
    if log_every < 1:
        raise ValueError(f"fit: log_every must be >= 1, got {log_every}")
    res, t0 = FitResult(), time.time()
    bar = progress(batches, steps, what, show_progress)
    for step, batch in zip(range(steps), bar):  # range first: no batch is drawn past ``steps``
        loss, parts = step_fn(step, batch)
        if loss is not None:
            if update is None:
                raise ValueError(f"fit({what}): step_fn returned a loss but fit has no update to step it")
            update.step(loss, step)
        for k, v in parts.items():
            fv = float(v.detach()) if torch.is_tensor(v) else float(v)
            res.last[k] = fv
            res.history.setdefault(k, []).append(fv)
            res.ema[k] = fv if k not in res.ema else EMA_KEEP * res.ema[k] + EMA_NEW * fv
        res.steps = step + 1
        if step % log_every == 0 or (log_last and step == steps - 1):
            if log is not None:
                for k in parts:
                    log(f"{log_prefix}{k}", res.last[k], step)
            bar.set_postfix({k: f"{v:.4g}" for k, v in res.ema.items()})
        if checkpoint is not None and checkpoint_every and (step + 1) % checkpoint_every == 0:
            if checkpoint(step) is True:
                break
    bar.close()
    res.seconds = time.time() - t0
    return res


# -- autoregressive sampling --------------------------------------------------------------------
@torch.no_grad()
def sample_autoregressive(next_logits: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], labels: torch.Tensor,
                          length: int, seed: int, temperature: float | Sequence[float] | torch.Tensor = 1.0,
                          allowed: torch.Tensor | None = None, top_k: int | None = None, batch_size: int = 500,
                          device: torch.device | str | None = None) -> torch.Tensor:
    """Ancestral sampling of int64 [n, length] token sequences (on the CPU) for ``labels`` [n].

    ``next_logits(prefix, labels)``: prefix int64 [B, t] and labels int64 [B] on ``device`` ->
    logits [B, V] of position t (cast to float32 here). Per position t: codes outside
    ``allowed[t]`` (bool [length, V]) get -inf, logits are divided by ``max(T_t, 1e-6)`` with
    ``T_t = temperature`` (a float) or ``float(temperature[t])`` (one per position; a float32
    tensor rounds its values), optionally cut to the ``top_k`` largest, and one code is drawn by
    ``torch.multinomial`` on the CPU from a generator seeded with ``seed``. T_t -> 0 is argmax.
    NFE = ``length`` calls of ``next_logits`` per batch of ``batch_size``.
    """
    per_position = not isinstance(temperature, (int, float))
    if per_position and len(temperature) != length:
        raise ValueError(f"sample_autoregressive: {len(temperature)} temperatures for {length} positions")
    if allowed is not None:
        if allowed.ndim != 2 or allowed.shape[0] != length:
            raise ValueError(f"sample_autoregressive: allowed mask must be [{length}, V], got {tuple(allowed.shape)}")
        if not bool(allowed.any(-1).all()):
            raise ValueError("sample_autoregressive: a position's allowed mask has no allowed code")
    device = labels.device if device is None else device
    g = torch.Generator().manual_seed(seed)
    outs = []
    for i in range(0, len(labels), batch_size):
        lab = labels[i : i + batch_size].to(device)
        seq = torch.empty(len(lab), 0, dtype=torch.long, device=device)
        for t in range(length):
            logit = next_logits(seq, lab).float()  # [B, V]
            if allowed is not None:
                logit = logit.masked_fill(~allowed[t], float("-inf"))
            logit = logit / max(float(temperature[t]) if per_position else temperature, 1e-6)
            if top_k:
                kth = torch.topk(logit, top_k, dim=-1).values[:, -1:]
                logit = logit.masked_fill(logit < kth, float("-inf"))
            nxt = torch.multinomial(torch.softmax(logit, -1).cpu(), 1, generator=g)
            seq = torch.cat([seq, nxt.to(seq.device)], dim=1)
        outs.append(seq.cpu())
    return torch.cat(outs) if outs else torch.empty(0, length, dtype=torch.long)
