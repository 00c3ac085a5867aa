"""The cost record of a fine-tuning run (what the issue and peft's ``method_comparison`` report).

* ``trainable_params`` -- number of parameters with ``requires_grad`` (count).
* ``adapter_layers``   -- indices of the decoder layers that carry adapter weights.
* ``adapter_bytes``    -- size in bytes of what ``save_pretrained`` writes for the adapter
  (peft: ``adapter_model.safetensors`` + ``adapter_config.json``; ours: same layout).
* ``median_step_s``    -- median wall seconds per optimiser step after ``timing_warmup`` steps.
* ``total_train_s``    -- wall seconds of the whole training loop.
* ``peak_memory_bytes``-- GPU: ``torch.cuda.max_memory_allocated`` during training (reset first).
  CPU: the process' peak resident set size during training: the kernel's high-water mark
  ``VmHWM`` is reset by writing ``5`` to ``/proc/self/clear_refs`` (Linux >= 4.0) and read from
  ``/proc/self/status`` afterwards; where that is not possible, ``resource.getrusage`` ``ru_maxrss``
  (a process-lifetime peak, so an upper bound). On CPU the number includes the Python / torch
  runtime and the frozen base weights: differences between arms are what matters.
* ``train_flops``      -- an estimate of the training FLOPs (count), :func:`train_flops`.
"""
from __future__ import annotations

import resource
import statistics
import tempfile
from pathlib import Path

import torch


class PeakMemory:
    """Context manager measuring peak memory (bytes) on ``device``: CUDA allocator or CPU RSS."""

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.peak = 0
        self.kind = ""

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.kind = "cuda_max_allocated"
        else:
            self.kind = "cpu_peak_rss_vmhwm" if _reset_hwm() else "cpu_ru_maxrss"
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = int(torch.cuda.max_memory_allocated(self.device))
        elif self.kind == "cpu_peak_rss_vmhwm":
            self.peak = _read_status_kb("VmHWM") * 1024
        else:
            self.peak = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux: KiB
        return False


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _read_status_kb("VmHWM") > 0
    except OSError:
        return False


def _read_status_kb(field: str) -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def trainable_params(model) -> int:
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


def dir_bytes(path: Path) -> int:
    return int(sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()))


def adapter_bytes(save_fn) -> int:
    """Bytes written by ``save_fn(directory)`` into a fresh temporary directory."""
    with tempfile.TemporaryDirectory(prefix="adapter-") as d:
        save_fn(Path(d))
        return dir_bytes(Path(d))


def median_step_s(step_s: list[float], warmup: int) -> float:
    """Median of the per-step seconds after the first ``warmup`` steps (all steps if too few)."""
    tail = step_s[warmup:] if len(step_s) > warmup else step_s
    return float(statistics.median(tail)) if tail else 0.0


# -- FLOPs -------------------------------------------------------------------------------------------
def matmul_params(base_model) -> tuple[list[int], int]:
    """(per decoder layer: parameters used as matmul weights, lm_head matmul parameters).

    Linear layers only: the embedding lookup is not a matmul; norms are negligible. ``base_model``
    is the unwrapped HF causal LM (``model.model.layers``, ``lm_head``).
    """
    layers = base_model.model.layers
    per_layer = []
    for layer in layers:
        n = 0
        for m in layer.modules():
            if isinstance(m, torch.nn.Linear):
                n += m.weight.numel()
        per_layer.append(n)
    head = base_model.get_output_embeddings()
    return per_layer, int(head.weight.numel())


def train_flops(base_model, tokens: int, n_adapter: int, adapter_layers: list[int]) -> float:
    """Training FLOPs estimate for a PEFT run (count), after Kaplan et al. 2020's 6·N·T rule.

    With the base frozen, per token: forward ``2·(N_base + N_adapter)``; backward for activation
    gradients ``2·(N_above + N_adapter)`` where ``N_above`` are the base matmul parameters at or
    above the lowest adapted layer plus the LM head (autograd stops below it); backward for weight
    gradients ``2·N_adapter`` (frozen weights get none). ``tokens`` counts padded positions (what
    the matmuls computed). Attention-score FLOPs (QKᵀ, AV, and the prefix positions of
    Prefix-Tuning) are excluded, as in the 6·N·T rule. Full fine-tuning would be 6·N_base·T.
    """
    per_layer, head = matmul_params(base_model)
    n_base = sum(per_layer) + head
    lo = min(adapter_layers) if adapter_layers else len(per_layer)
    n_above = sum(per_layer[lo:]) + head
    return float(tokens) * (2 * (n_base + n_adapter) + 2 * (n_above + n_adapter) + 2 * n_adapter)
