"""Prefix-Tuning+ (arXiv:2506.13674, Section 3, Eq. 7): the prefix out of attention, as a memory.

Every attention head's output gets ``phi(q_i)ᵀ M`` added before the output projection, with M a
trainable memory read by a feature map of the (normed, pre-RoPE) query; the softmax attention
itself is untouched, so the prefix's weight no longer depends on the sequence length. The module
and the choices the paper leaves open (memory per head, zero init, pre-RoPE query, low-rank
option for parameter matching) are documented in :mod:`adapters.peft.prefix_plus`.

Parameters: ``rank: null`` gives the full per-head memory (``L * H * d_head**2`` parameters);
``rank: r`` gives ``M^h = A^h B^h`` (``L * H * 2 * d_head * r``); ``match_params: n`` picks the rank
whose count is closest to ``n`` on the suite's base model (parameter-matched arms).
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from bench.adapter import AdapterParams
from adapters.peft.adapter_base import Attached, PeftAdapter
from adapters.peft.prefix_plus import PrefixPlus, rank_for_params
from bench.registry import register_adapter
from adapters.peft.params import PrefixPlusParams  # noqa: F401  (declared in the light module)


def _dims(config):
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return heads, head_dim


@register_adapter("prefix_tuning_plus")
class PrefixTuningPlus(PeftAdapter):
    """Our Prefix-Tuning+ (PrefixMemory) on every layer of a Qwen3 model."""

    Params = PrefixPlusParams

    def rank(self, base) -> int | None:
        if self.params.match_params is None:
            return self.params.rank
        heads, head_dim = _dims(base.model.config)
        return rank_for_params(self.params.match_params, base.num_layers, heads, head_dim)

    def expected_params(self, base) -> int:
        heads, head_dim = _dims(base.model.config)
        return PrefixPlus.closed_form_params(base.num_layers, heads, head_dim, self.rank(base))

    def attach(self, base, seed: int) -> Attached:
        r = self.rank(base)
        mod = PrefixPlus(base.model, rank=r, feature_map=self.params.feature_map, seed=seed)
        return Attached(base.model, list(mod.layer_ids), mod.save_pretrained,
                        {"memory_rank": r if r is not None else -1})
