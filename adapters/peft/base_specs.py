"""The ``base_model`` blocks of the PEFT suites as schemas (imports no torch: `bench validate` checks them).

``qwen3-tiny`` (:class:`TinySpec`, built and pre-trained here) and ``qwen3-8b`` (:class:`Qwen3HFSpec`,
the user's download); :mod:`adapters.peft.params` registers both with
:func:`bench.suite.declare_base_model`, so an unknown key or an out-of-range value is refused
before any work, naming ``base_model.<field>``.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TinySpec(BaseModel):
    """The ``base_model`` block of a suite for ``name: qwen3-tiny`` (all keys optional).

    Architecture: ``layers`` decoder layers of width ``hidden``; ``heads`` query heads and
    ``kv_heads`` key/value heads of ``head_dim`` each; SwiGLU MLP of width ``intermediate``;
    tied input/output embeddings over a ``vocab``-entry byte-level BPE.
    Pre-training: ``pretrain_steps`` AdamW steps of ``pretrain_batch`` x ``pretrain_seq`` tokens,
    peak learning rate ``pretrain_lr`` (linear warm-up, cosine decay), generator seed ``seed``.
    Elicitation regime: with ``pretrain_facts`` = f > 0 each window is drawn, with
    probability f, from the task-lexicon stream (``facts_sentences`` sentences, seed
    ``facts_seed``) instead of the local text; the tokenizer is trained on both.
    """

    model_config = ConfigDict(extra="forbid")

    name: Literal["qwen3-tiny"] = "qwen3-tiny"
    layers: int = Field(4, ge=1, le=32)
    hidden: int = Field(128, ge=16)
    heads: int = Field(4, ge=1)
    kv_heads: int = Field(2, ge=1)
    head_dim: int = Field(32, ge=4)
    intermediate: int = Field(384, ge=16)
    vocab: int = Field(1024, ge=300, description="BPE vocabulary size (256 byte symbols + merges + EOS)")
    max_position: int = Field(512, ge=64)
    pretrain_steps: int = Field(600, ge=0)
    pretrain_batch: int = Field(16, ge=1)
    pretrain_seq: int = Field(128, ge=16)
    pretrain_lr: float = Field(3e-3, gt=0)
    seed: int = 0
    pretrain_facts: float = Field(0.0, ge=0, le=1, description=(
        "fraction of pre-training windows drawn from the task-lexicon stream "
        "(adapters.peft.lexicon_stream: the generated tasks' facts in other words); 0: local text only"))
    facts_sentences: int = Field(6000, ge=1, description="sentences in the task-lexicon stream")
    facts_seed: int = Field(0, description="generator seed of the task-lexicon stream")

    @model_validator(mode="after")
    def _heads(self) -> "TinySpec":
        if self.heads % self.kv_heads:
            raise ValueError(f"heads {self.heads} is not a multiple of kv_heads {self.kv_heads} (grouped-query attention)")
        return self

    def identity(self) -> dict:
        """What the cache key hashes: the spec, without the stream fields while the stream is off
        (so a corpus-only spec keeps the key it had before the stream existed)."""
        d = self.model_dump(mode="json")
        if not self.pretrain_facts:
            for k in ("pretrain_facts", "facts_sentences", "facts_seed"):
                d.pop(k)
        else:  # the stream's text itself, so a change of its templates is a new model
            import hashlib

            from adapters.peft.lexicon_stream import lexicon_text
            from adapters.peft.qwen3_tiny import EOS

            d["facts_sha256"] = hashlib.sha256(lexicon_text(self.facts_sentences, self.facts_seed, EOS).encode()).hexdigest()
        return d


class Qwen3HFSpec(BaseModel):
    """``base_model`` block for a local Hugging Face Qwen3 checkpoint (e.g. Qwen3-8B)."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["qwen3-8b"] = "qwen3-8b"
    path: str | None = None
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] = "sdpa"
    require_gpu: bool = True
