"""Prefix-Tuning (Li & Liang 2021, arXiv:2101.00190) through peft's ``PrefixTuningConfig``.

``num_virtual_tokens`` trainable key/value vectors are prepended inside every attention layer
(peft passes them as ``past_key_values``); without the reparameterisation MLP
(``prefix_projection: false``, the default here) the trainable parameters are
``p * L * 2 * (n_kv_heads * d_head)``.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from bench.adapter import AdapterParams
from adapters.peft.adapter_base import Attached, PeftAdapter
from bench.registry import register_adapter
from adapters.peft.params import PrefixParams  # noqa: F401  (declared in the light module)


def kv_dim(config) -> int:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return config.num_key_value_heads * head_dim


@register_adapter("prefix_tuning")
class PrefixTuning(PeftAdapter):
    """peft Prefix-Tuning in every layer."""

    Params = PrefixParams

    def expected_params(self, base) -> int | None:
        if self.params.prefix_projection:
            return None
        return self.params.num_virtual_tokens * base.num_layers * 2 * kv_dim(base.model.config)

    def attach(self, base, seed: int) -> Attached:
        from peft import PrefixTuningConfig, get_peft_model

        p = self.params
        kw = {}
        if p.encoder_hidden_size is not None:
            kw["encoder_hidden_size"] = p.encoder_hidden_size
        cfg = PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=p.num_virtual_tokens,
                                 prefix_projection=p.prefix_projection,
                                 init_weights=None if p.init_weights == "random" else "zero", **kw)
        model = get_peft_model(base.model, cfg)
        return Attached(model, list(range(base.num_layers)), model.save_pretrained,
                        {"num_virtual_tokens": p.num_virtual_tokens})
