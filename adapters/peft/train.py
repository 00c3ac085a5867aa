"""The one supervised fine-tuning loop every PEFT arm uses (same data order, optimiser, schedule).

Data: (context, continuation) string pairs (:func:`adapters.peft.tasks.task_pairs`), tokenised the
way lm-eval's ``HFLM`` scores them (context encoded alone; the continuation's tokens are the
tail of the encoded concatenation; trailing context spaces move to the continuation), so the
model is trained on exactly the token boundary it is evaluated on. The loss is the mean
cross-entropy (nats/token) over continuation tokens only.

Optimiser: AdamW over the parameters with ``requires_grad`` (betas 0.9/0.999), linear warm-up for
``warmup_steps`` then linear decay to 10 % (:class:`bench.training.Schedule` ``linear``), gradient
clipping at ``grad_clip``; minibatches from
:func:`bench.training.minibatches` seeded by the cell's seed (so every arm sees the same batches).
Each step is timed with ``time.perf_counter`` (CUDA synchronised) around forward + backward +
optimiser step, excluding tokenisation (and with ``time.process_time``: CPU seconds, which on a
shared CPU box is less sensitive to other processes' load than wall time); peak memory is tracked by :class:`adapters.peft.cost.PeakMemory`.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import torch
from pydantic import BaseModel, ConfigDict, Field

from bench.training import Schedule, Update, fit, minibatches
from adapters.peft.params import FinetuneBudget  # noqa: F401  (declared in the light module)


@dataclass
class TrainStats:
    """What :func:`train` measured: per-step seconds and losses (nats/token), tokens computed."""

    step_s: list[float] = field(default_factory=list)
    step_cpu_s: list[float] = field(default_factory=list)  # process CPU seconds (all threads) per step
    losses: list[float] = field(default_factory=list)
    tokens: int = 0  # padded tokens processed (B x L summed over steps): what the matmuls computed
    label_tokens: int = 0
    total_s: float = 0.0  # wall seconds of the loop, validation passes excluded
    val_curve: list[tuple[int, float]] = field(default_factory=list)  # (steps done, val loss nats/token)
    val_s: float = 0.0  # wall seconds spent in validation passes
    peak_memory_bytes: int = 0
    memory_kind: str = ""


@contextlib.contextmanager
def cpu_threads(n: int | None):
    """Temporarily set ``torch.set_num_threads(n)`` (no-op for None)."""
    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) as lm-eval's ``HFLM._encode_pair`` splits them."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    return whole[: len(ctx)], whole[len(ctx):]


def collate(tokenizer, pairs: list[tuple[str, str]], max_length: int, device) -> dict[str, torch.Tensor]:
    """Right-padded batch: input_ids / attention_mask / labels (int64 [B, L]; labels -100 off-target)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    seqs, labs = [], []
    for c, t in pairs:
        ci, ti = encode_pair(tokenizer, c, t)
        ids = (ci + ti)[-max_length:]
        lab = ([-100] * len(ci) + ti)[-max_length:]
        seqs.append(ids)
        labs.append(lab)
    L = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), L), pad, dtype=torch.long)
    labels = torch.full((len(seqs), L), -100, dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.long)
    for i, (s, lab) in enumerate(zip(seqs, labs)):
        input_ids[i, : len(s)] = torch.tensor(s)
        labels[i, : len(lab)] = torch.tensor(lab)
        mask[i, : len(s)] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def lm_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy (nats) over the label tokens (labels shifted by the model)."""
    return model(**batch).loss


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(model, tokenizer, pairs: list[tuple[str, str]], budget: FinetuneBudget, seed: int,
          what: str = "finetune", show_progress: bool = True, log_metric=None,
          val_pairs: list[tuple[str, str]] | None = None) -> TrainStats:
    """Train ``model``'s trainable parameters on ``pairs`` for ``budget.steps`` steps; return stats.

    With ``val_pairs`` and ``budget.val_every`` > 0, the mean validation loss (:func:`mean_loss`,
    nats/token) is measured every ``val_every`` steps and after the last one, kept in
    ``stats.val_curve`` and logged as ``log_metric("val_loss", value, step)`` (an MLflow history);
    those passes are not counted in the step times or ``total_s``.
    """
    from adapters.peft.cost import PeakMemory

    if not pairs:
        from bench.errors import BenchError

        raise BenchError(f"{what}: the task has no training examples")
    device = model_device(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=budget.lr, weight_decay=budget.weight_decay)
    total = budget.steps
    schedule = Schedule("linear", total, budget.warmup_steps, floor=0.1, warmup_plus_one=True)
    update = Update(opt, schedule, budget.grad_clip, params, what)
    stats = TrainStats()
    model.train()
    mem = PeakMemory(device)
    t_start = time.perf_counter()

    def step_fn(step: int, idx: torch.Tensor):
        batch = collate(tokenizer, [pairs[i] for i in idx.tolist()], budget.max_length, device)
        _sync(device)
        t0, c0 = time.perf_counter(), time.process_time()
        loss = update.step(lm_loss(model, batch), step)  # timed: forward + backward + clip + opt/LR step
        _sync(device)
        stats.step_s.append(time.perf_counter() - t0)
        stats.step_cpu_s.append(time.process_time() - c0)
        stats.losses.append(loss)
        stats.tokens += int(batch["input_ids"].numel())
        stats.label_tokens += int((batch["labels"] != -100).sum())
        done = step + 1
        if val_pairs and budget.val_every and (done % budget.val_every == 0 or done == total):
            v0 = time.perf_counter()
            vl = mean_loss(model, tokenizer, val_pairs, budget.eval_batch_size, budget.max_length)
            stats.val_curve.append((done, vl))
            if log_metric is not None:
                log_metric("val_loss", vl, step)
            stats.val_s += time.perf_counter() - v0
        return None, {"loss": loss}

    with mem:
        batches = minibatches(len(pairs), min(budget.batch_size, len(pairs)), total, seed)
        fit(step_fn, batches, total, what, log=log_metric, log_prefix="train_", log_every=10, log_last=True,
            show_progress=show_progress)
    stats.total_s = time.perf_counter() - t_start - stats.val_s
    stats.peak_memory_bytes, stats.memory_kind = mem.peak, mem.kind
    model.eval()
    return stats


@torch.no_grad()
def mean_loss(model, tokenizer, pairs: list[tuple[str, str]], batch_size: int, max_length: int) -> float:
    """Label-token-weighted mean cross-entropy (nats/token) of ``model`` on ``pairs`` (eval mode)."""
    device = model_device(model)
    was_training = model.training
    model.eval()
    tot, n = 0.0, 0
    for i in range(0, len(pairs), batch_size):
        batch = collate(tokenizer, pairs[i : i + batch_size], max_length, device)
        k = int((batch["labels"][:, 1:] != -100).sum())
        tot += float(model(**batch).loss) * k
        n += k
    model.train(was_training)
    return tot / max(1, n)
