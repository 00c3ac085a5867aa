"""Base models of the PEFT suites: ``qwen3-tiny`` (built here) and ``qwen3-8b`` (the user's download).

A suite names its base model in its top-level ``base_model`` block:

* ``{name: qwen3-tiny, layers: 4, hidden: 128, ...}`` -- see :class:`adapters.peft.qwen3_tiny.TinySpec`;
  pre-trained on first use and cached by configuration hash (float32, eager attention).
* ``{name: qwen3-8b, path: /abs/dir}`` or ``{name: qwen3-8b}`` with ``$QWEN3_8B_DIR`` -- Qwen3-8B in
  the Hugging Face layout (``config.json`` with ``model_type: qwen3``, ``*.safetensors`` shards and
  their index, tokenizer files), loaded in bfloat16 on the GPU. Nothing is downloaded: when the
  directory is absent or incomplete, :func:`check_base_model` raises
  :class:`bench.errors.DatasetMissing` naming ``QWEN3_8B_DIR`` and the expected layout, within
  milliseconds (it only lists files).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

from bench.context import stable_hash
from bench.errors import BenchError, DatasetMissing, SuiteError

QWEN3_8B_ENV = "QWEN3_8B_DIR"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
LAYOUT = (
    "config.json (model_type qwen3), model.safetensors or model-0000k-of-0000n.safetensors shards with "
    "model.safetensors.index.json, and tokenizer files tokenizer.json + tokenizer_config.json "
    "(as `huggingface-cli download Qwen/Qwen3-8B --local-dir DIR` writes them)"
)


from adapters.peft.base_specs import Qwen3HFSpec  # noqa: E402,F401  (the light schema, re-exported)


@dataclass
class LoadedBase:
    """A loaded base model: HF causal LM (frozen, eval mode), its tokenizer, and identity.

    ``key`` is a stable hash of the base model's identity (spec + weights fingerprint), used to
    key caches of per-model artefacts such as the Layer Card.
    """

    model: Any
    tokenizer: Any
    name: str
    key: str
    device: torch.device
    dtype: torch.dtype
    pretrain: dict = field(default_factory=dict)  # qwen3-tiny: pretrain_stats.json (facts_cloze_acc, final_loss)

    @property
    def num_layers(self) -> int:
        return len(self.model.model.layers)


def parse_spec(base_model: dict | None):
    if not base_model:
        raise SuiteError("base_model: the PEFT suites need a top-level base_model block, e.g. {name: qwen3-tiny}")
    name = base_model.get("name")
    try:
        if name == "qwen3-tiny":
            from adapters.peft.qwen3_tiny import TinySpec

            return TinySpec.model_validate(base_model)
        if name == "qwen3-8b":
            return Qwen3HFSpec.model_validate(base_model)
    except ValidationError as e:
        raise SuiteError(f"base_model: {e}") from None
    raise SuiteError(f"base_model.name: unknown base model {name!r}; known: qwen3-tiny, qwen3-8b")


def qwen3_8b_dir(spec: Qwen3HFSpec) -> Path:
    """The checkpoint directory; raise :class:`DatasetMissing` unless the layout is complete."""
    raw = spec.path or os.environ.get(QWEN3_8B_ENV)
    if not raw:
        raise DatasetMissing(
            f"Qwen3-8B weights not configured: set {QWEN3_8B_ENV} to the directory of your local "
            f"Qwen3-8B download (or base_model.path in the suite). Expected layout: {LAYOUT}. "
            "Nothing is downloaded by the harness."
        )
    d = Path(raw).expanduser()
    where = f"{d} (from {'base_model.path' if spec.path else QWEN3_8B_ENV})"
    if not d.is_dir():
        raise DatasetMissing(f"Qwen3-8B directory {where} does not exist. Set {QWEN3_8B_ENV} to a directory with {LAYOUT}.")
    missing = []
    if not (d / "config.json").is_file():
        missing.append("config.json")
    shards = sorted(d.glob("*.safetensors"))
    if not shards:
        missing.append("*.safetensors")
    index = d / "model.safetensors.index.json"
    if index.is_file():
        try:
            wanted = set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError):
            wanted = set()
            missing.append("a readable model.safetensors.index.json")
        missing += sorted(w for w in wanted if not (d / w).is_file())
    for f in TOKENIZER_FILES:
        if not (d / f).is_file():
            missing.append(f)
    if missing:
        raise DatasetMissing(
            f"Qwen3-8B directory {where} is incomplete: missing {', '.join(missing)}. "
            f"Set {QWEN3_8B_ENV} to a directory with {LAYOUT}."
        )
    try:
        mt = json.loads((d / "config.json").read_text()).get("model_type")
    except ValueError:
        mt = None
    if mt != "qwen3":
        raise DatasetMissing(f"{d / 'config.json'}: model_type is {mt!r}, expected 'qwen3' ({QWEN3_8B_ENV} points elsewhere?)")
    return d


def check_base_model(base_model: dict | None) -> None:
    """Fast pre-flight check (no weights read): the spec parses and, for 8B, the files are there."""
    spec = parse_spec(base_model)
    if isinstance(spec, Qwen3HFSpec):
        qwen3_8b_dir(spec)
        if spec.require_gpu and not torch.cuda.is_available():
            raise BenchError("qwen3-8b: no CUDA GPU visible; the 8B suite runs in bfloat16 on a GPU "
                             "(set base_model.require_gpu: false to try the CPU anyway)")


def load_base_model(base_model: dict | None, ctx) -> LoadedBase:
    """Load the suite's base model (frozen, eval mode) on ``ctx.device`` (CUDA if available for 8B)."""
    spec = parse_spec(base_model)
    from adapters.peft.qwen3_tiny import _say

    log = _say if getattr(ctx, "progress", True) else None  # per-100-step lines; notices always print
    pretrain: dict = {}
    if isinstance(spec, Qwen3HFSpec):
        d = qwen3_8b_dir(spec)
        check_base_model(base_model)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
        dtype = getattr(torch, spec.dtype)
        model = AutoModelForCausalLM.from_pretrained(d, dtype=dtype, attn_implementation=spec.attn_implementation,
                                                     device_map={"": str(device)}, use_safetensors=True)
        tok = AutoTokenizer.from_pretrained(d)
        model.eval()
        ident = {"spec": spec.model_dump(mode="json", exclude={"path"}),
                 "index": sorted(p.name + str(p.stat().st_size) for p in d.glob("*.safetensors"))}
        name = "qwen3-8b"
    else:
        from adapters.peft.qwen3_tiny import load_qwen3_tiny

        device = torch.device(getattr(ctx, "device", "cpu"))
        dtype = torch.float32
        model, tok, pretrain = load_qwen3_tiny(spec, ctx.cache, device=device, log=log)
        ident = {"spec": spec.identity(), "cfg": model.config.to_json_string()}
        name = "qwen3-tiny"
    for p in model.parameters():
        p.requires_grad_(False)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return LoadedBase(model=model, tokenizer=tok, name=name, key=stable_hash(ident), device=device, dtype=dtype,
                      pretrain=pretrain)
