"""Trainable-parameter counts of every PEFT arm equal their closed forms (computed here by hand)."""
from __future__ import annotations

import pytest

from peft_helpers import PAIRS, FakeTask, tiny_base

BUDGET = {"steps": 2, "batch_size": 4, "lr": 1e-3, "warmup_steps": 0, "timing_warmup": 0}
L, D, H, KV, HD, FF = 3, 32, 4, 2, 8, 48
# per layer, per unit of rank: q (D->H*HD), k (D->KV*HD), v, o (H*HD->D), gate/up (D->FF), down (FF->D)
LORA_PER_RANK = (D + H * HD) + (D + KV * HD) * 2 + (H * HD + D) + (D + FF) * 2 + (FF + D)


def _finetune(adapter):
    from adapters.peft.train import FinetuneBudget

    base = tiny_base(L, D, H, KV, HD, FF)
    return adapter.finetune(base, FakeTask(PAIRS), FinetuneBudget.model_validate(BUDGET), 0)


def test_lora_all_layers():
    from adapters.peft.lora import LoRA

    r = _finetune(LoRA(LoRA.Params(rank=2, alpha=4), 0))
    assert r.trainable_params == L * 2 * LORA_PER_RANK
    assert r.adapter_layers == list(range(L))
    assert r.adapter_bytes > 4 * r.trainable_params  # float32 safetensors + config


def test_lora_attention_only():
    from adapters.peft.lora import LoRA

    r = _finetune(LoRA(LoRA.Params(rank=3, target_modules=["q_proj", "v_proj"]), 0))
    assert r.trainable_params == L * 3 * ((D + H * HD) + (D + KV * HD))


@pytest.mark.parametrize("placement,k,layers", [("top", 1, [2]), ("bottom", 2, [0, 1]), ("uniform", 2, [0, 2])])
def test_layer_card_fixed_placements(placement, k, layers):
    from adapters.peft.layer_card import LayerCardLoRA

    r = _finetune(LayerCardLoRA(LayerCardLoRA.Params(rank=2, placement=placement, k=k, probe_steps=0,
                                                     score="resnorm"), 0))
    assert r.adapter_layers == layers
    assert r.trainable_params == len(layers) * 2 * LORA_PER_RANK


def test_prefix_tuning():
    from adapters.peft.prefix_tuning import PrefixTuning

    r = _finetune(PrefixTuning(PrefixTuning.Params(num_virtual_tokens=5), 0))
    assert r.trainable_params == 5 * L * 2 * (KV * HD)


@pytest.mark.parametrize("params,expected", [
    ({}, L * H * HD * HD),
    ({"rank": 3}, L * H * 2 * HD * 3),
    ({"match_params": L * H * 2 * HD * 5 + 7}, L * H * 2 * HD * 5),
])
def test_prefix_tuning_plus(params, expected):
    from adapters.peft.prefix_tuning_plus import PrefixTuningPlus

    r = _finetune(PrefixTuningPlus(PrefixTuningPlus.Params(**params), 0))
    assert r.trainable_params == expected
    assert r.adapter_layers == list(range(L))


def test_cost_record_is_sane():
    from adapters.peft.lora import LoRA

    r = _finetune(LoRA(LoRA.Params(rank=1), 0))
    assert r.median_step_s > 0 and r.total_train_s >= r.median_step_s
    assert r.peak_memory_bytes > 0
    assert r.train_flops > 0
