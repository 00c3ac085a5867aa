"""Local byte-level text corpora of the LLM-internals family and the ``llm_text`` data set.

Nothing is downloaded. Two corpora with different content:

* ``pretrain`` -- the PEFT family's English pre-training text (Debian licence texts under
  ``/usr/share/common-licenses`` and CPython's ``pydoc_data/topics.py``;
  :func:`adapters.peft.qwen3_tiny.corpus_text`), about 1.6 MB here.
* ``finetune`` -- Python source code of a fixed list of CPython standard-library packages
  (``json``, ``email``, ``asyncio``, ``unittest``, ``logging``, ``http``; sorted ``*.py`` files), the
  "different corpus" of SeedPrint's fine-tuning arm, capped at ``finetune_bytes``.

Tokens are bytes (ids 0..255, int64). The last ``val_fraction`` of the pre-training bytes is held
out as the validation split (never trained on). Suite block::

    dataset: {name: llm_text, params: {val_fraction: 0.05, finetune_bytes: 1000000}}
"""
from __future__ import annotations

import hashlib
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bench.errors import DatasetMissing, SuiteError
from bench.registry import register_dataset

if TYPE_CHECKING:  # torch is imported where bytes become tensors: checking a suite (light route) loads none
    import torch

FINETUNE_PACKAGES = ("json", "email", "asyncio", "unittest", "logging", "http")


class LlmTextParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    val_fraction: float = Field(0.05, gt=0, lt=0.5, description="tail of the pre-training bytes held out")
    finetune_bytes: int = Field(1_000_000, ge=10_000, description="cap on the fine-tuning corpus (bytes)")


@dataclass
class ByteSplit:
    """A byte stream: ``ids`` int64 [N] in [0, 256)."""

    ids: torch.Tensor

    def __len__(self) -> int:
        return int(self.ids.numel())

    def head(self, n: int | None) -> "ByteSplit":
        return self if n is None or n >= len(self) else ByteSplit(self.ids[:n])

    def fingerprint(self) -> str:
        import torch

        return hashlib.sha256(self.ids.to(torch.uint8).numpy().tobytes()).hexdigest()[:16]


@dataclass
class LlmText:
    """``train`` / ``test`` (held-out tail) of the pre-training corpus and the ``finetune`` corpus."""

    name: str
    train: ByteSplit
    test: ByteSplit
    finetune: ByteSplit
    source: str

    def describe(self) -> dict:
        return {"dataset": self.name, "dataset_source": self.source, "n_train": len(self.train),
                "n_test": len(self.test), "n_finetune": len(self.finetune)}


def _bytes(text: str) -> torch.Tensor:
    import torch

    return torch.frombuffer(bytearray(text.encode("utf-8", errors="replace")), dtype=torch.uint8).long()


def finetune_text(max_bytes: int) -> str:
    """Concatenated stdlib sources of :data:`FINETUNE_PACKAGES` (sorted), cut at ``max_bytes`` bytes."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    parts, total = [], 0
    for pkg in FINETUNE_PACKAGES:
        for p in sorted((stdlib / pkg).rglob("*.py")):
            if "test" in p.parts[len(stdlib.parts):-1]:
                continue
            t = p.read_text(encoding="utf-8", errors="replace")
            parts.append(t)
            total += len(t)
            if total >= max_bytes:
                break
        if total >= max_bytes:
            break
    if not parts:
        raise DatasetMissing(f"llm_text: no Python sources of {FINETUNE_PACKAGES} under {stdlib}; the fine-tuning "
                             "corpus needs CPython's standard library sources")
    return "\n".join(parts).encode("utf-8", errors="replace")[:max_bytes].decode("utf-8", errors="ignore")


def load_corpora(p: LlmTextParams) -> LlmText:
    from adapters.peft.qwen3_tiny import corpus_text

    text, sha = corpus_text()
    ids = _bytes(text)
    n_val = max(1024, int(len(ids) * p.val_fraction))
    ft = _bytes(finetune_text(p.finetune_bytes))
    return LlmText("llm_text", ByteSplit(ids[:-n_val]), ByteSplit(ids[-n_val:]), ByteSplit(ft),
                   f"local:licences+pydoc(sha {sha[:12]}),stdlib:{'+'.join(FINETUNE_PACKAGES)}")


@register_dataset("llm_text")
class LlmTextDataset:
    """Byte-level local text: pre-training corpus (train / held-out test) and a fine-tuning corpus."""

    Params = LlmTextParams
    limit_splits = False  # n_train / n_test would cut bytes: `bench run --limit N` caps steps and counts instead

    @staticmethod
    def load(spec) -> LlmText:
        try:
            p = LlmTextParams.model_validate(spec.params)
        except ValidationError as e:
            raise SuiteError(f"dataset.params: {e}") from None
        return load_corpora(p)


def windows(ids: torch.Tensor, batch: int, seq: int, steps: int, data_seed: int):
    """Yield ``steps`` batches int64 [batch, seq+1] of random windows of ``ids``.

    The order depends on ``data_seed`` only (a private generator), never on the model's init seed:
    every arm and every init seed sees the same stream in the same order.
    """
    import torch

    g = torch.Generator().manual_seed(int(data_seed))
    n = ids.numel() - seq - 2
    for _ in range(steps):
        starts = torch.randint(0, n, (batch,), generator=g)
        yield torch.stack([ids[s: s + seq + 1] for s in starts.tolist()])


def eval_windows(ids: torch.Tensor, n: int, seq: int) -> torch.Tensor:
    """``n`` evenly spaced, non-random windows int64 [n, seq+1] of ``ids`` (validation batches)."""
    import torch

    span = ids.numel() - seq - 2
    starts = torch.linspace(0, span, n).long()
    return torch.stack([ids[s: s + seq + 1] for s in starts.tolist()])
