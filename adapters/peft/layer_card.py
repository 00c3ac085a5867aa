"""Layer Card-guided LoRA placement (Xu et al., arXiv:2602.04019): LoRA only on selected layers.

``prepare`` computes the Layer Card of the base model on the task (or loads it from the cache:
the card depends on base model, task and card settings, not on the cell's seed), selects
layers by a rule with a cost objective, logs the card (CSV, markdown, PNG) into the cell's
artefacts, then trains peft LoRA with ``layers_to_transform = selected`` and the *same* LoRA
configuration as the all-layer baseline. The card's quantities are the method note's
operationalisation (see :mod:`adapters.peft.layer_scores`), not formulas from the paper.

Selection (``placement: card``): layers ranked by ``score`` -- ``probe`` (validation-loss drop of
a ``probe_steps``-step single-layer LoRA probe, the card's "performance" column), ``res_over_eact``
(Res_l / E_act_l, forward/backward only) or ``resnorm`` -- added greedily while their coupling
with the chosen layers stays below ``rho_max``, until ``k`` layers or until the cost fraction
(``cost_key``: adapter ``params`` or training ``flops`` relative to all-layer LoRA) would exceed
``cost_budget``. Ablations of the method note: ``placement: top | bottom | mid | uniform | random``
with ``k`` layers (``random`` draws with the cell's seed), and ``all``.
"""
from __future__ import annotations

import time
from typing import Literal

import torch
from pydantic import Field, model_validator

from bench.adapter import AdapterParams
from bench.context import stable_hash
from adapters.peft import cost as costmod
from adapters.peft.adapter_base import Attached, PeftAdapter, lora_closed_form, lora_layers_present, peft_lora
from adapters.peft.layer_scores import (LINEARS, LayerCard, card_statistics, coupling_matrix, fixed_placement,
                                   select_layers, write_card)
from adapters.peft.train import collate, mean_loss, train
from bench.registry import register_adapter
from adapters.peft.params import LayerCardParams  # noqa: F401  (declared in the light module)


@register_adapter("layer_card")
class LayerCardLoRA(PeftAdapter):
    """LoRA on the layers a Layer Card selects (or on an ablation placement)."""

    Params = LayerCardParams
    layers: list[int] | None = None
    card: LayerCard | None = None

    # -- the card ---------------------------------------------------------------------------------
    def card_key(self, base, dataset, budget) -> str:
        p = self.params
        return stable_hash({
            "base": base.key, "data": dataset.fingerprint, "rank": p.rank, "alpha": p.alpha,
            "targets": p.target_modules, "calib": p.calib_examples, "ridge": p.ridge,
            "probe_steps": p.probe_steps, "probe_val": p.probe_val_examples, "card_seed": p.card_seed,
            "lr": budget.lr, "batch": budget.batch_size, "max_length": budget.max_length, "impl": 2,
        })

    def build_card(self, base, dataset, budget, progress: bool = True) -> LayerCard:
        """Calibration pass (Res, E_act, kappa), coupling (jvp) and single-layer probes."""
        p = self.params
        model, tok = base.model, base.tokenizer
        L = base.num_layers
        t0 = time.perf_counter()
        calib = dataset.train.pairs[: p.calib_examples]
        batch = collate(tok, calib, budget.max_length, base.device)
        stats = card_statistics(model, batch, ridge=p.ridge)
        rho = coupling_matrix(model, batch, stats)
        for i in stats:
            for s in stats[i].values():
                s.step_left = s.step_right = None
        t_card = time.perf_counter() - t0
        flops_all = costmod.train_flops(model, 1, lora_closed_form(model, p.rank, p.target_modules, list(range(L))),
                                        list(range(L)))
        rows = []
        val = dataset.validation.pairs[: p.probe_val_examples]
        loss0 = mean_loss(model, tok, val, budget.eval_batch_size, budget.max_length) if p.probe_steps else None
        # the card's own compute (FLOPs, 2 per matmul parameter per token and forward pass): the calibration
        # forward + backward (3 passes), one jvp per layer (~2 passes each), the probes' training and their
        # validation passes (each 1 pass over the validation tokens)
        per_layer, head = costmod.matmul_params(model)
        n_fwd = sum(per_layer) + head
        calib_tok = int(batch["input_ids"].numel())
        val_tok = sum(len(tok(c + t, add_special_tokens=False)["input_ids"]) for c, t in val) if p.probe_steps else 0
        card_flops = 2.0 * n_fwd * calib_tok * (3 + 2 * L) + (2.0 * n_fwd * val_tok if p.probe_steps else 0.0)
        for i in range(L):
            maps = stats[i]
            res = sum(m.res ** 2 for m in maps.values()) ** 0.5
            e_act = sum(m.e_act for m in maps.values()) / len(maps)
            kappa = max(m.kappa for m in maps.values())
            n_ad = lora_closed_form(model, p.rank, p.target_modules, [i])
            row = {"layer": i, "resnorm": res, "e_act": e_act, "log10_kappa": float(torch.tensor(kappa).log10()),
                   "res_over_eact": res / e_act if e_act > 0 else 0.0, "adapter_params": n_ad,
                   "flops_frac": costmod.train_flops(model, 1, n_ad, [i]) / flops_all,
                   "probe_gain": None, "probe_s_per_step": None, "probe_peak_mem_mb": None,
                   "maps": {k: {"res": m.res, "e_act": m.e_act, "kappa": m.kappa} for k, m in maps.items()}}
            if p.probe_steps:
                torch.manual_seed(p.card_seed)
                pm = peft_lora(base, p.rank, p.alpha, p.target_modules, [i], p.dropout)
                pb = budget.model_copy(update={"steps": p.probe_steps,
                                               "warmup_steps": min(budget.warmup_steps, p.probe_steps // 4),
                                               "timing_warmup": min(budget.timing_warmup, p.probe_steps // 4)})
                st = train(pm, tok, dataset.train.pairs, pb, p.card_seed, what=f"card probe layer {i}",
                           show_progress=progress)
                loss1 = mean_loss(pm, tok, val, budget.eval_batch_size, budget.max_length)
                card_flops += costmod.train_flops(model, st.tokens, n_ad, [i]) + 2.0 * n_fwd * val_tok
                row.update(probe_gain=loss0 - loss1, probe_val_loss=loss1,
                           probe_s_per_step=costmod.median_step_s(st.step_s, pb.timing_warmup),
                           probe_peak_mem_mb=st.peak_memory_bytes / 2**20)
                restored = pm.unload()
                assert restored is model
                for q in model.parameters():
                    q.requires_grad_(False)
            rows.append(row)
        meta = {"base_model": base.name, "base_key": base.key, "calib_examples": len(calib),
                "calib_tokens": int(batch["attention_mask"].sum()), "ridge": p.ridge,
                "probe_steps": p.probe_steps, "val_loss_base": loss0, "card_pass_s": t_card,
                "total_s": time.perf_counter() - t0, "card_flops": card_flops,
                "formulas": "method-note operationalisation (docs/methods/layer_card.md), not the paper's"}
        return LayerCard(rows=rows, coupling=rho, meta=meta)

    def get_card(self, base, dataset, budget, ctx) -> LayerCard:
        key = self.card_key(base, dataset, budget)
        # checksummed, atomic, unique temp names (bench.context.Cache); a corrupt entry is rebuilt
        card = ctx.cache.load_parsed("layer_card", key, lambda b: LayerCard.from_json(b.decode("utf-8")), "json")
        if card is not None:
            return card
        card = self.build_card(base, dataset, budget, getattr(ctx, "progress", True))
        ctx.cache.save_json("layer_card", key, card.to_json())
        return card

    # -- selection --------------------------------------------------------------------------------
    def before_finetune(self, base, ctx) -> None:
        p = self.params
        L = base.num_layers
        budget = self.Budget.model_validate(ctx.budget)
        if p.placement != "card":
            self.layers = fixed_placement(p.placement, L, p.k or L, self.seed)
            ctx.log_param("layer_rule", f"{p.placement}-{p.k}")
            return
        self.card = card = self.get_card(base, ctx.dataset, budget, ctx)
        all_layers = list(range(L))
        n_all = lora_closed_form(base.model, p.rank, p.target_modules, all_layers)
        f_all = costmod.train_flops(base.model, 1, n_all, all_layers)

        def cost_fn(S):
            n = lora_closed_form(base.model, p.rank, p.target_modules, S)
            if p.cost_key == "params":
                return n / n_all
            return costmod.train_flops(base.model, 1, n, S) / f_all

        self.layers, log = select_layers(card, p.score, p.k, p.cost_budget, cost_fn, p.rho_max)
        rule = f"card:{p.score}, k={p.k}, cost_budget={p.cost_budget} ({p.cost_key}), rho_max={p.rho_max}"
        ctx.log_param("layer_rule", rule)
        ctx.log_param("selected_layers", ",".join(map(str, self.layers)))
        ctx.log_metric("card_s", float(card.meta.get("total_s", 0.0)))
        ctx.log_metric("selected_cost_frac", cost_fn(self.layers))
        write_card(card, self.layers, ctx.artifact_dir, f"{base.name} on {','.join(ctx.dataset.tasks)}")
        (ctx.artifact_dir / "layer_card_selection.txt").write_text(rule + "\n" + "\n".join(log) + "\n")

    def expected_params(self, base) -> int:
        return lora_closed_form(base.model, self.params.rank, self.params.target_modules, self.layers)

    def finetune(self, base_model, task, budget, seed: int):
        """LoRA on the selected layers; with a card, the card's own cost (its probes, calibration and
        coupling passes: ``card.meta`` ``total_s`` wall seconds and ``card_flops``) is added to
        ``total_train_s`` and ``train_flops`` (the card is computed once per base model and task and
        cached, so every cell that uses it is charged its one-off cost). ``extra`` keeps both parts."""
        res = super().finetune(base_model, task, budget, seed)
        if self.card is not None:
            card_s = float(self.card.meta.get("total_s", 0.0))
            card_fl = float(self.card.meta.get("card_flops", 0.0))
            res.extra.update(card_s=card_s, card_flops=card_fl, finetune_s=res.total_train_s,
                             finetune_flops=res.train_flops)
            res.total_train_s += card_s
            res.train_flops += card_fl
        return res

    def attach(self, base, seed: int) -> Attached:
        p = self.params
        if self.layers is None:  # finetune called directly (no prepare): fixed placements only
            if p.placement == "card":
                raise RuntimeError("layer_card: call prepare(ctx) (it computes the card) before finetune")
            self.layers = fixed_placement(p.placement, base.num_layers, p.k or base.num_layers, self.seed)
        model = peft_lora(base, p.rank, p.alpha, p.target_modules, self.layers, p.dropout)
        present = lora_layers_present(model)
        if present != sorted(self.layers):
            raise RuntimeError(f"layer_card: LoRA landed in layers {present}, selected {self.layers}")
        return Attached(model, present, model.save_pretrained,
                        {"lora_rank": p.rank, "n_adapter_layers": len(present)})
