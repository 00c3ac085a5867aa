"""Light declarations of the LLM-internals family (imports no torch, transformers or scipy): the
Params and Budget models of its adapters and what they are (:func:`bench.registry.declare_adapter`),
the ``local_pretrained`` checkpoint check (its ``validate_environment`` hook), and the family's
light metric / data-set modules, so `bench validate` checks an LLM-internals suite without loading
torch. The implementations (:mod:`.headwise_rmsnorm`, :mod:`.seedprint_matrix`,
:mod:`.local_model`, and :mod:`.models` / :mod:`.pretrain` for the shared specs) import these models.

The metric modules :mod:`.metric_internals`, :mod:`.metric_seedprint` and the data-set module
:mod:`.corpus` register their names at import time and import torch / scipy / scikit-learn only
inside the functions that compute; this module imports them (the light route of
:func:`bench.registry.load_light`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import model_validator, BaseModel, ConfigDict, Field

from bench.adapter import AdapterParams
from bench.errors import DatasetMissing
from bench.registry import declare_adapter

VOCAB = 256  # byte-level tokens


class ArchSpec(BaseModel):
    """Architecture of a tiny decoder LM (byte vocabulary)."""

    model_config = ConfigDict(extra="forbid")

    arch: Literal["llama", "qwen3"] = Field("llama", description="llama: no q/k norm (the paper's setting); "
                                             "qwen3: with Qwen3's q/k RMSNorm (second setting)")
    layers: int = Field(4, ge=1, le=48, description="decoder layers L")
    hidden: int = Field(64, ge=8, description="model width d")
    heads: int = Field(4, ge=1, description="query heads H")
    kv_heads: int = Field(4, ge=1, description="key/value heads (GQA when < heads)")
    head_dim: int = Field(16, ge=2, description="d_k per head")
    intermediate: int = Field(176, ge=8, description="SwiGLU width")
    max_position: int = Field(256, ge=16)
    init_std: float = Field(0.02, gt=0, description="initializer_range of the HF init (normal std)")
    tie_embeddings: bool = False

    @model_validator(mode="after")
    def _heads(self) -> "ArchSpec":
        if self.heads % self.kv_heads:
            raise ValueError(f"heads {self.heads} is not a multiple of kv_heads {self.kv_heads} (grouped-query "
                             "attention shares each key/value head among an equal number of query heads)")
        return self


class HeadNormSpec(BaseModel):
    """Head-wise RMSNorm options (arXiv:2605.06611 leaves eps, gain sharing and init open)."""

    model_config = ConfigDict(extra="forbid")

    eps: float = Field(1e-6, gt=0, description="eps inside the RMS (Qwen3's RMSNorm value)")
    per_head: bool = Field(False, description="False: one gain λ ∈ R^{d_k} per layer shared by all heads "
                           "(the paper as read); True: one gain per head")
    init: float = Field(1.0, description="initial value of the gain λ")


class TrainSpec(BaseModel):
    """The training recipe (identical across arms; ``lr`` is swept per arm in the suites)."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(600, ge=0, description="optimiser steps")
    batch: int = Field(16, ge=1, description="sequences per step")
    seq: int = Field(64, ge=8, description="tokens (bytes) per training sequence")
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    warmup: int = Field(30, ge=0, description="linear warm-up steps")
    lr_floor: float = Field(0.1, ge=0, le=1, description="cosine floor as a fraction of the peak")
    weight_decay: float = Field(0.1, ge=0)
    clip: float | None = Field(1.0, gt=0, description="max global gradient L2 norm (None: no clipping)")
    data_seed: int = Field(1234, description="seed of the window order (shared by every arm and init seed)")
    eval_every: int = Field(100, ge=1, description="validation loss every this many steps (and at the end)")
    eval_seqs: int = Field(64, ge=1, description="held-out windows for the validation loss")


class BaselineParams(AdapterParams):
    arch: ArchSpec = Field(default_factory=ArchSpec, description="architecture of the tiny decoder LM")
    curve_every: int = Field(1, ge=1, description="log the training-loss curve every this many steps")


class HeadNormParams(BaselineParams):
    head_norm: HeadNormSpec = Field(default_factory=HeadNormSpec, description="head-wise RMSNorm options")


class MatrixParams(AdapterParams):
    arch: ArchSpec = Field(default_factory=ArchSpec, description="architecture shared by every model")
    head_norm: HeadNormSpec | None = Field(None, description="models with head-wise RMSNorm (None: the baseline)")
    n_models: int = Field(3, ge=2, le=16, description="init seeds per cell")
    finetune_steps: int = Field(150, ge=1, description="continued-training steps on the fine-tuning corpus")
    finetune_lr: float = Field(1e-3, gt=0, description="peak LR of the continued training")


MODEL_DIR_ENV = "LLM_INTERNALS_MODEL_DIR"
LAYOUT = "config.json, model.safetensors (or shards + model.safetensors.index.json), tokenizer.json"


class LocalParams(AdapterParams):
    model_dir: str | None = Field(None, description=f"checkpoint directory (null: ${MODEL_DIR_ENV}, preferred: a "
                                  "path written here becomes part of the cell's config hash)")
    dtype: Literal["float32", "bfloat16"] = "bfloat16"


def model_dir(raw: str | None) -> Path:
    """The checkpoint directory; :class:`DatasetMissing` naming the variable unless the layout is there."""
    raw = raw or os.environ.get(MODEL_DIR_ENV)
    if not raw:
        raise DatasetMissing(f"no local model: set {MODEL_DIR_ENV} (or methods[].params.model_dir) to a Hugging Face "
                             f"decoder checkpoint directory with {LAYOUT}; nothing is downloaded")
    d = Path(raw).expanduser()
    missing = [f for f in ("config.json", "tokenizer.json") if not (d / f).is_file()]
    if not any(d.glob("*.safetensors")) if d.is_dir() else True:
        missing.append("*.safetensors")
    if missing:
        raise DatasetMissing(f"local model directory {d} (from {'model_dir' if raw != os.environ.get(MODEL_DIR_ENV) else MODEL_DIR_ENV}) "
                             f"lacks {', '.join(missing)}; expected {LAYOUT}")
    return d


def check_local_model(suite, method) -> None:
    """``bench validate`` hook of ``local_pretrained``: the checkpoint directory is there
    (:class:`DatasetMissing` otherwise). Reads files' presence only (no torch)."""
    model_dir(LocalParams.model_validate(method.params).model_dir)


declare_adapter("llama_baseline", "adapters.llm_internals.headwise_rmsnorm:LlamaBaseline", BaselineParams, (),
                TrainSpec)
declare_adapter("headwise_rmsnorm", "adapters.llm_internals.headwise_rmsnorm:HeadwiseRMSNorm", HeadNormParams, (),
                TrainSpec)
declare_adapter("seedprint_matrix", "adapters.llm_internals.seedprint_matrix:SeedPrintMatrix", MatrixParams, (),
                TrainSpec)
declare_adapter("local_pretrained", "adapters.llm_internals.local_model:LocalPretrained", LocalParams, (),
                validate_environment=check_local_model)

# the family's light metric and data-set modules (they register at import; torch only where they compute)
from adapters.llm_internals import corpus, metric_internals, metric_seedprint  # noqa: E402,F401
