"""LoRA on all layers: the baseline arm of the PEFT suites (Hu et al. 2021, arXiv:2106.09685).

peft's ``LoraConfig`` on the chosen linear maps (default all seven of a Qwen3 layer: q/k/v/o and
gate/up/down) of every decoder layer; A Kaiming-initialised, B zero (the adapted model starts at
the base model). Trainable parameters: ``L * r * sum_maps (d_in + d_out)``.
"""
from __future__ import annotations

from pydantic import Field

from bench.adapter import AdapterParams
from adapters.peft.adapter_base import Attached, PeftAdapter, lora_closed_form, lora_layers_present, peft_lora
from adapters.peft.layer_scores import LINEARS
from bench.registry import register_adapter
from adapters.peft.params import LoraParams  # noqa: F401  (declared in the light module)


@register_adapter("lora")
class LoRA(PeftAdapter):
    """peft LoRA in every decoder layer."""

    Params = LoraParams

    def layers(self, base) -> list[int]:
        return list(range(base.num_layers))

    def expected_params(self, base) -> int:
        return lora_closed_form(base.model, self.params.rank, self.params.target_modules, self.layers(base))

    def attach(self, base, seed: int) -> Attached:
        p = self.params
        layers = self.layers(base)
        model = peft_lora(base, p.rank, p.alpha, p.target_modules,
                          None if len(layers) == base.num_layers else layers, p.dropout)
        return Attached(model, lora_layers_present(model), model.save_pretrained,
                        {"lora_rank": p.rank, "n_adapter_layers": len(layers)})
