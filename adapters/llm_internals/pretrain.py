"""Pre-training (and continued training) of the family's tiny LMs, cached by configuration hash.

One recipe for every arm: AdamW (betas 0.9/0.95, weight decay ``weight_decay``), linear warm-up
then cosine decay to ``lr_floor`` x peak (:class:`bench.training.Schedule`), global gradient-norm
clip, next-byte cross-entropy in nats, batches of random windows whose order depends only on
``data_seed`` (:func:`adapters.llm_internals.corpus.windows`): the baseline and head-wise RMSNorm
arms, and every init seed, see the same bytes in the same order. The loss of every step and the
validation loss every ``eval_every`` steps (fixed, evenly spaced held-out windows) are kept in the
history.

Cache: ``results/cache/llm_internals/<key>.pt`` (``bench.context.Cache``, sha256-checked), with
``key`` the :func:`bench.context.stable_hash` of the architecture, the head-norm option, the
recipe, the init seed, the corpus fingerprint and, for continued training, the parent's key.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import torch

from adapters.llm_internals.corpus import eval_windows, windows
from adapters.llm_internals.models import ArchSpec, attach_headwise_rmsnorm, build_model
from adapters.llm_internals.params import HeadNormSpec, TrainSpec  # noqa: F401 - re-exported (light module)
from bench.context import Cache, stable_hash
from bench.training import Schedule, Update, fit

IMPL = 1
CACHE_KIND = "llm_internals"


@dataclass
class Trained:
    """A model and its training record (``history``: loss per step; ``val``: {step: val loss})."""

    model: torch.nn.Module
    key: str
    history: list[float] = field(default_factory=list)
    val: dict[int, float] = field(default_factory=dict)
    seconds: float = 0.0
    cached: bool = False


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def make_model(arch: ArchSpec, head_norm: HeadNormSpec | None, init_seed: int) -> torch.nn.Module:
    """Freshly initialised model (init seed ``init_seed``), with head-wise RMSNorm if ``head_norm``."""
    model = build_model(arch, init_seed)
    if head_norm is not None:
        attach_headwise_rmsnorm(model, head_norm.eps, head_norm.per_head, head_norm.init)
    return model


@torch.no_grad()
def val_loss(model: torch.nn.Module, ids: torch.Tensor, n: int, seq: int, batch: int = 32) -> float:
    """Mean next-byte cross-entropy (nats) on ``n`` fixed windows of ``ids``."""
    was = model.training
    model.eval()
    w = eval_windows(ids, n, seq)
    tot, cnt = 0.0, 0
    for i in range(0, len(w), batch):
        b = w[i: i + batch]
        logits = model(input_ids=b[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), b[:, 1:].reshape(-1),
                                                 reduction="sum")
        tot, cnt = tot + float(loss), cnt + b[:, 1:].numel()
    model.train(was)
    return tot / cnt


def train_key(arch: ArchSpec, head_norm: HeadNormSpec | None, recipe: TrainSpec, init_seed: int, corpus: str,
              parent: str | None = None) -> str:
    return stable_hash({"arch": arch.model_dump(mode="json"),
                        "head_norm": None if head_norm is None else head_norm.model_dump(mode="json"),
                        "recipe": recipe.model_dump(mode="json"), "init_seed": int(init_seed), "corpus": corpus,
                        "parent": parent, "impl": IMPL})


def train(model: torch.nn.Module, train_ids: torch.Tensor, val_ids: torch.Tensor, recipe: TrainSpec,
          what: str, log_metric=None, log_prefix: str = "") -> tuple[list[float], dict[int, float], float]:
    """Train ``model`` in place; return (loss per step, {step: val loss}, seconds).

    ``log_metric(key, value, step)`` (e.g. ``ctx.log_metric``) receives ``<prefix>train_loss`` every
    step and ``<prefix>val_loss`` at each evaluation (steps counted from 1).
    """
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    other = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                             {"params": other, "weight_decay": 0.0}], lr=recipe.lr, betas=(0.9, 0.95))
    update = Update(opt, Schedule("cosine", recipe.steps, recipe.warmup, recipe.lr_floor), recipe.clip,
                    what=what)
    val: dict[int, float] = {0: val_loss(model, val_ids, recipe.eval_seqs, recipe.seq)}
    if log_metric:
        log_metric(f"{log_prefix}val_loss", val[0], 0)

    def step_fn(step: int, batch: torch.Tensor):
        x, y = batch[:, :-1], batch[:, 1:]
        logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        return loss, {"train_loss": loss}

    def checkpoint(step: int) -> None:
        s = step + 1
        if s % recipe.eval_every == 0 or s == recipe.steps:
            val[s] = val_loss(model, val_ids, recipe.eval_seqs, recipe.seq)
            if log_metric:
                log_metric(f"{log_prefix}val_loss", val[s], s)

    def log(key, value, step):
        if log_metric:
            log_metric(f"{log_prefix}{key}", value, step + 1)

    res = fit(step_fn, windows(train_ids, recipe.batch, recipe.seq, recipe.steps, recipe.data_seed), recipe.steps,
              what, update, log=log, log_every=1, show_progress=False, checkpoint=checkpoint, checkpoint_every=1)
    if recipe.steps and recipe.steps not in val:
        checkpoint(recipe.steps - 1)
    model.eval()
    return res.history.get("train_loss", []), val, res.seconds


def trained_model(arch: ArchSpec, head_norm: HeadNormSpec | None, recipe: TrainSpec, init_seed: int, data,
                  cache: Cache, what: str, log_metric=None, log_prefix: str = "", corpus: str = "pretrain",
                  parent: Trained | None = None) -> Trained:
    """The model of this configuration after training, from the cache or trained now (then cached).

    ``corpus``: ``pretrain`` (``data.train``, validated on ``data.test``) or ``finetune``
    (``data.finetune``; validated on its last 5 %), continuing from ``parent`` when given (same
    architecture). On a cache hit the cached curve is replayed through ``log_metric``.
    """
    if corpus == "pretrain":
        train_ids, val_ids = data.train.ids, data.test.ids
    else:
        ft = data.finetune.ids
        cut = int(len(ft) * 0.95)
        train_ids, val_ids = ft[:cut], ft[cut:]
    fp = stable_hash([corpus, data.train.fingerprint(), data.test.fingerprint(),
                      data.finetune.fingerprint() if corpus == "finetune" else None])
    key = train_key(arch, head_norm, recipe, init_seed, fp, parent.key if parent else None)
    model = make_model(arch, head_norm, init_seed)
    hit = cache.load_torch(CACHE_KIND, key)
    if hit is not None:
        model.load_state_dict(hit["state"])
        model.eval()
        hist, val = list(hit["history"]), {int(k): float(v) for k, v in hit["val"].items()}
        if log_metric:
            for i, v in enumerate(hist):
                log_metric(f"{log_prefix}train_loss", v, i + 1)
            for s, v in sorted(val.items()):
                log_metric(f"{log_prefix}val_loss", v, s)
        return Trained(model, key, hist, val, float(hit.get("seconds", 0.0)), True)
    if parent is not None:
        model.load_state_dict(parent.model.state_dict())
    t0 = time.time()
    _say(f"[llm_internals] training {what}: {recipe.steps} steps x {recipe.batch}x{recipe.seq} bytes on {corpus} "
         f"(cached as {key})")
    hist, val, secs = train(model, train_ids, val_ids, recipe, what, log_metric, log_prefix)
    _say(f"[llm_internals] {what}: trained in {time.time() - t0:.0f}s, final val loss {val[max(val)]:.3f} nats/byte")
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    cache.save_torch(CACHE_KIND, key, {"state": state, "history": hist, "val": val, "seconds": secs})
    return Trained(model, key, hist, val, secs, False)
