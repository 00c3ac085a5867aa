"""``local_pretrained``: sink diagnostics of a user-provided Hugging Face decoder LM (GPU suites).

Nothing is downloaded. The checkpoint directory (Hugging Face layout: ``config.json``,
``*.safetensors``, tokenizer files) comes from ``params.model_dir`` or, when that is null, the
environment variable :data:`MODEL_DIR_ENV` (``LLM_INTERNALS_MODEL_DIR``). ``bench validate`` (the
adapter's ``validate_environment`` hook) and ``bench run`` (``preflight``) fail with one line
naming the variable and the missing files; planning (``bench plan``) needs no weights. With the variable (``model_dir: null``, the default) the path is
not part of the cell's config hash (where the weights lie is not what they are; the config's sha256
is logged instead); a path written into the suite is.

The model is loaded with eager attention (``attn_dtype`` float32 or bfloat16) on ``$BENCH_DEVICE``
/ CUDA when available, frozen; the ``llm_internals`` metric then reports the sink, variance,
DomRatio and effective-rank figures and the interventions on it (no convergence columns: it is not
trained here). Probe text is the ``llm_text`` held-out split decoded as UTF-8 and tokenised with
the checkpoint's own tokenizer.
"""
from __future__ import annotations

import hashlib
from typing import ClassVar

import torch

from adapters.llm_internals.params import (LAYOUT, MODEL_DIR_ENV, LocalParams,  # noqa: F401 - re-exported
                                          check_local_model, model_dir)
from bench.adapter import Adapter
from bench.errors import DatasetMissing
from bench.registry import register_adapter

@register_adapter("local_pretrained")
class LocalPretrained(Adapter):
    """A frozen local checkpoint, analysed by ``llm_internals`` (sinks, variance, interventions)."""

    Params: ClassVar = LocalParams
    capabilities = frozenset()

    model = None
    init_model = None
    trained = None
    tokenizer = None

    @classmethod
    def validate_environment(cls, suite, method) -> None:
        """``bench validate``: the checkpoint directory is there (:class:`DatasetMissing` otherwise);
        the light :func:`adapters.llm_internals.params.check_local_model`, declared for validation."""
        check_local_model(suite, method)

    @classmethod
    def preflight(cls, suite) -> None:
        """``bench run``: the same check before any run is created."""
        for m in suite.methods:
            if m.adapter == "local_pretrained":
                cls.validate_environment(suite, m)

    def prepare(self, ctx) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        d = model_dir(self.params.model_dir)
        dev = ctx.device
        self.model = AutoModelForCausalLM.from_pretrained(d, dtype=getattr(torch, self.params.dtype),
                                                          attn_implementation="eager", use_safetensors=True).to(dev).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tokenizer = AutoTokenizer.from_pretrained(d)
        self.vocab = int(self.model.config.vocab_size)
        ctx.log_param("local_model_config_sha256", hashlib.sha256((d / "config.json").read_bytes()).hexdigest())

    def text_ids(self, byte_ids: torch.Tensor, n: int, seq: int) -> torch.Tensor:
        """int64 [n, seq] windows of the tokenised text ``byte_ids`` (uint8 values as int64)."""
        text = bytes(byte_ids.to(torch.uint8).tolist()).decode("utf-8", errors="ignore")
        ids = torch.tensor(self.tokenizer(text)["input_ids"], dtype=torch.long)
        if len(ids) < seq + 1:
            raise DatasetMissing(f"local_pretrained: the held-out text gives only {len(ids)} tokens (< {seq + 1})")
        starts = torch.linspace(0, len(ids) - seq - 1, n).long()
        return torch.stack([ids[s: s + seq] for s in starts.tolist()])
