"""LoRA (Hu et al. 2021, arXiv:2106.09685): the baseline arm of the PEFT suites, and its matched variant.

peft's ``LoraConfig`` on the chosen linear maps (default all seven of a Qwen3 layer: q/k/v/o and
gate/up/down) of every decoder layer; A Kaiming-initialised, B zero (the adapted model starts at
the base model). Trainable parameters: ``L * r * sum_maps (d_in + d_out)``.

Matched arm: ``target_modules: [q_proj, k_proj, v_proj, o_proj]`` with ``match_params: n``
picks the rank whose count is closest to ``n`` (e.g. the prefix arms' count), and refuses a
mismatch above ``match_tol`` (relative), so "LoRA vs prefix methods at equal parameters" is a
checked statement, not a comment.
"""
from __future__ import annotations

from adapters.peft.adapter_base import Attached, PeftAdapter, lora_closed_form, lora_layers_present, peft_lora
from bench.errors import BenchError
from bench.registry import register_adapter
from adapters.peft.params import LoraParams  # noqa: F401  (declared in the light module)


def matched_rank(model, targets: list[str], layers: list[int], target: int, tol: float) -> int:
    """The LoRA rank (int >= 1) whose closed-form count on ``targets`` x ``layers`` of ``model`` is
    closest to ``target`` parameters; raises :class:`BenchError` (naming ``params.match_params``)
    when the relative mismatch ``|count - target| / target`` exceeds ``tol``."""
    per = lora_closed_form(model, 1, targets, layers)
    if per <= 0:
        raise BenchError(f"params.target_modules: {targets} adapt no parameters in layers {layers}")
    r = max(1, int(round(target / per)))
    miss = abs(r * per - target) / target
    if miss > tol:
        raise BenchError(f"params.match_params: {target} is {miss:.1%} away from the nearest LoRA count "
                         f"({r * per} at rank {r}, {per} per rank on {targets}); allowed {tol:.0%} (params.match_tol)")
    return r


@register_adapter("lora")
class LoRA(PeftAdapter):
    """peft LoRA in every decoder layer."""

    Params = LoraParams

    def layers(self, base) -> list[int]:
        return list(range(base.num_layers))

    def rank(self, base) -> int:
        p = self.params
        if p.match_params is None:
            return p.rank
        return matched_rank(base.model, p.target_modules, self.layers(base), p.match_params, p.match_tol)

    def expected_params(self, base) -> int:
        return lora_closed_form(base.model, self.rank(base), self.params.target_modules, self.layers(base))

    def attach(self, base, seed: int) -> Attached:
        p = self.params
        layers = self.layers(base)
        r = self.rank(base)
        model = peft_lora(base, r, p.alpha, p.target_modules,
                          None if len(layers) == base.num_layers else layers, p.dropout)
        return Attached(model, lora_layers_present(model), model.save_pretrained,
                        {"lora_rank": r, "n_adapter_layers": len(layers)})
