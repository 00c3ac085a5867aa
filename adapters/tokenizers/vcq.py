"""``vcq``: Variable Codebook Size Quantization ("Taming the Entropy Cliff", arXiv 2605.06207).

Identical to :class:`adapters.tokenizers.vq.VQAdapter` (same tokenizer, parameter count, loss and AR recipe)
except the codebook-size schedule: position t may only use the first K_t codes of one shared
codebook of size K_max, with K_t growing monotonically from K_min = 2 (paper abstract). The
quantizer masks codes k >= K_t before the argmax; the AR prior's logits are masked to the first
K_t entries when sampling (and, with ``prior.mask_logits_in_training``, in training, which the
method note marks as a reconstruction: the target always satisfies k < K_t).

The schedule's functional form is not given in the accessible text (method note); the suite
chooses one of (t = 0..L-1):
- ``log-linear``: log2 K_t = log2 K_min + (log2 K_max - log2 K_min) * (t/(L-1))^gamma, rounded;
- ``doubling``:   K_t = min(K_max, K_min * 2^t);
- ``linear``:     K_t = round(K_min + (K_max - K_min) * t/(L-1)).
"""
from __future__ import annotations

from adapters.tokenizers.vq import VQAdapter
from bench.registry import register_adapter
from adapters.tokenizers.params import VCQParams, codebook_schedule  # noqa: F401  (declared in the light module)


@register_adapter("vcq")
class VCQAdapter(VQAdapter):
    """VCQ: per-position codebook sizes K_t growing from K_min to K_max (arXiv 2605.06207)."""

    Params = VCQParams
    reuses_weights_of = VQAdapter  # vq's training recipe; the schedule (all vcq changes) is in the cache key

    def schedule(self) -> list[int]:
        p = self.params
        return codebook_schedule(p.schedule, p.k_min, p.k_max, p.tokenizer.length, p.gamma)
