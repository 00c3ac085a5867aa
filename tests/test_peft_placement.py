"""Only the layers a placement selects carry LoRA weights (peft ``layers_to_transform``)."""
from __future__ import annotations

import torch

from peft_helpers import PAIRS, FakeTask, tiny_base


def _lora_layers(model):
    from adapters.peft.adapter_base import lora_layers_present

    return lora_layers_present(model)


def test_only_selected_layers_carry_lora():
    from adapters.peft.layer_card import LayerCardLoRA
    from adapters.peft.train import FinetuneBudget

    base = tiny_base(layers=4)
    ad = LayerCardLoRA(LayerCardLoRA.Params(rank=2, placement="card", k=2, score="res_over_eact", probe_steps=0), 0)
    ad.layers = [1, 3]  # as if the card had selected them
    before = {n: p.clone() for n, p in base.model.named_parameters()}
    res = ad.finetune(base, FakeTask(PAIRS), FinetuneBudget(steps=3, batch_size=4, lr=1e-2, warmup_steps=0), 0)
    model = res.model
    assert _lora_layers(model) == [1, 3]
    assert res.adapter_layers == [1, 3]
    for name, p in model.named_parameters():
        if "lora_" in name:
            layer = int(name.split(".layers.")[1].split(".")[0])
            assert layer in (1, 3), name
            assert p.requires_grad
        else:
            assert not p.requires_grad, name
    # frozen base weights did not move; LoRA B of the selected layers did
    for n, p in model.get_base_model().named_parameters():
        if "lora_" not in n and n.replace(".base_layer", "") in before:
            assert torch.equal(p, before[n.replace(".base_layer", "")]), n
    moved = [n for n, p in model.named_parameters() if "lora_B" in n and p.abs().sum() > 0]
    assert moved and all(".layers.1." in n or ".layers.3." in n for n in moved)


def test_card_rule_respects_k_and_coupling():
    from adapters.peft.layer_scores import LayerCard, select_layers

    rows = [{"layer": i, "resnorm": r, "e_act": 1.0, "probe_gain": g}
            for i, (r, g) in enumerate([(4.0, 0.1), (3.0, 0.5), (2.0, 0.4), (1.0, 0.3)])]
    coupling = [[1, 0, 0, 0], [0, 1, 0.9, 0], [0, 0.9, 1, 0], [0, 0, 0, 1]]
    card = LayerCard(rows, coupling)
    chosen, _ = select_layers(card, "probe", 2, None, lambda S: len(S) / 4, 0.5)
    assert chosen == [1, 3]  # 2 is the next best but coupled with 1
    chosen, _ = select_layers(card, "resnorm", None, 0.5, lambda S: len(S) / 4, 0.5)
    assert chosen == [0, 1]  # cost budget 50% of the layers
