"""The shared base of the PEFT arms: one ``prepare`` / ``finetune`` / cost path for every method.

A subclass only says how to attach its trainable parameters (:meth:`PeftAdapter.attach`) and how
many it should have in closed form (:meth:`PeftAdapter.expected_params`); training
(:func:`adapters.peft.train.train`), the cost record (:mod:`adapters.peft.cost`) and accuracy
(:mod:`adapters.peft.evaluate`) are the same code for all arms, so differences between rows come
from the methods only.
"""
from __future__ import annotations

import gc
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from bench.adapter import Adapter, AdapterParams, FinetuneResult
from adapters.peft import cost as costmod
from adapters.peft.base_models import LoadedBase, check_base_model, load_base_model
from adapters.peft.train import FinetuneBudget, TrainStats, cpu_threads, train

FACTS_CLOZE_MIN = 0.5  # below: the base does not know the facts the tasks elicit (chance 0.25)


def check_elicitation(base: LoadedBase, log_metric) -> float | None:
    """The elicitation premise (the base knows the facts), measured once at pre-training: log the base's
    ``facts_cloze_acc`` (in [0, 1], chance 0.25) as metric ``base_facts_cloze_acc`` and warn when it is
    below :data:`FACTS_CLOZE_MIN`. Returns it, or None for a base without pre-training stats."""
    cloze = base.pretrain.get("facts_cloze_acc")
    if cloze is None:
        return None
    log_metric("base_facts_cloze_acc", float(cloze))
    if cloze < FACTS_CLOZE_MIN:
        warnings.warn(f"base model {base.name} ({base.key}) does not know the task facts: cloze accuracy "
                      f"{cloze:.2f} (chance 0.25, wanted >= {FACTS_CLOZE_MIN}); fine-tuning then writes new facts "
                      "instead of eliciting known ones: raise base_model.pretrain_steps", stacklevel=2)
    return float(cloze)


@dataclass
class Attached:
    """What :meth:`PeftAdapter.attach` returns: the trainable model, its adapter layers, a saver."""

    model: Any
    adapter_layers: list[int]
    save: Any  # callable(Path) writing the adapter like save_pretrained
    info: dict


class PeftAdapter(Adapter):
    """Base class of ``lora``, ``layer_card``, ``prefix_tuning`` and ``prefix_tuning_plus``."""

    capabilities = frozenset({"finetune"})
    Params: ClassVar[type[AdapterParams]] = AdapterParams
    Budget: ClassVar[type[FinetuneBudget]] = FinetuneBudget

    result: FinetuneResult | None = None
    tokenizer: Any = None
    base: LoadedBase | None = None

    # -- suite-level hooks --------------------------------------------------------------------
    @classmethod
    def preflight(cls, suite) -> None:
        """Fast check before any run is created (base-model files present, spec valid)."""
        check_base_model(suite.base_model)

    @classmethod
    def leaderboard_figures(cls, board, out_dir: Path) -> list[Path]:
        """Pareto plots of accuracy vs each cost column, and the Prefix-Tuning vs Prefix-Tuning+
        length curves when the suite sweeps lengths (called once by :mod:`bench.leaderboard`)."""
        from adapters.peft.length_plot import length_figures
        from adapters.peft.pareto import pareto_figures

        return pareto_figures(board, out_dir) + length_figures(board, out_dir)

    # -- subclass interface -------------------------------------------------------------------
    def attach(self, base: LoadedBase, seed: int) -> Attached:
        raise NotImplementedError

    def expected_params(self, base: LoadedBase) -> int | None:
        """Closed-form trainable-parameter count for this configuration on ``base`` (or None)."""
        return None

    def before_finetune(self, base: LoadedBase, ctx) -> None:
        """Hook for work that needs the cell context (e.g. the Layer Card pass)."""

    # -- lifecycle ------------------------------------------------------------------------------
    def prepare(self, ctx) -> None:
        budget = self.Budget.model_validate(ctx.budget)
        with cpu_threads(budget.cpu_threads if budget.cpu_threads and ctx.device.type == "cpu" else None):
            self._prepare(ctx, budget)

    def _prepare(self, ctx, budget: FinetuneBudget) -> None:
        check_base_model(ctx.suite.base_model)
        ds = ctx.dataset
        if hasattr(ds, "ensure_loaded"):
            ds.ensure_loaded()
        base = load_base_model(ctx.suite.base_model, ctx)
        self.base, self.tokenizer = base, base.tokenizer
        ctx.log_param("base_model", base.name)
        ctx.log_param("base_model_key", base.key)
        check_elicitation(base, ctx.log_metric)
        self._ctx = ctx
        self.before_finetune(base, ctx)
        self.result = self.finetune(base, ds, budget, self.seed)
        r = self.result
        for k, v in r.extra.items():
            ctx.log_metric(k, v)
        ctx.log_param("adapter_layers", ",".join(map(str, r.adapter_layers)))
        (ctx.artifact_dir / "cost_record.json").write_text(json.dumps({
            "trainable_params": r.trainable_params, "adapter_layers": r.adapter_layers,
            "adapter_bytes": r.adapter_bytes, "median_step_s": r.median_step_s,
            "total_train_s": r.total_train_s, "peak_memory_bytes": r.peak_memory_bytes,
            "train_flops": r.train_flops, **r.extra}, indent=1))

    def finetune(self, base_model: LoadedBase, task, budget: FinetuneBudget | dict, seed: int) -> FinetuneResult:
        """Attach the method to ``base_model``, train it on ``task.train`` within ``budget``.

        Returns the adapted model (eval mode) and its cost record (see :mod:`adapters.peft.cost`).
        """
        if isinstance(budget, dict):
            budget = self.Budget.model_validate(budget)
        torch.manual_seed(seed)
        att = self.attach(base_model, seed)
        model = att.model
        n_fill = int(getattr(self.params, "input_filler_tokens", 0) or 0)
        if n_fill:  # the input-length sweep: same filler before every input, training and scoring
            from adapters.peft.input_length import InputFiller, filler_ids

            InputFiller(model, filler_ids(base_model.tokenizer, n_fill))
        n_train = costmod.trainable_params(model)
        want = self.expected_params(base_model)
        if want is not None and want != n_train:
            from bench.errors import BenchError

            raise BenchError(f"{self.registry_name}: {n_train} trainable parameters, closed form says {want}")
        ctx = getattr(self, "_ctx", None)
        progress = getattr(ctx, "progress", True)
        if getattr(self, "_quiet", False):  # a sub-run (placement sweep): no per-step MLflow history
            ctx, progress = None, False
        gc.collect()
        val = task.validation.pairs[: budget.val_examples] if budget.val_every else None
        stats: TrainStats = train(model, base_model.tokenizer, task.train.pairs, budget, seed,
                                  what=f"{self.registry_name}", show_progress=progress,
                                  log_metric=getattr(ctx, "log_metric", None), val_pairs=val)
        nbytes = costmod.adapter_bytes(att.save)
        flops = costmod.train_flops(base_model.model, stats.tokens, n_train, att.adapter_layers)
        extra = {"final_train_loss": sum(stats.losses[-10:]) / len(stats.losses[-10:]),
                 "cpu_s_per_step": costmod.median_step_s(stats.step_cpu_s, budget.timing_warmup),
                 "train_tokens": float(stats.tokens), "label_tokens": float(stats.label_tokens)}
        if stats.val_curve:
            extra["final_val_loss"] = stats.val_curve[-1][1]
        extra.update({k: float(v) for k, v in att.info.items() if isinstance(v, (int, float))})
        if ctx is not None:
            ctx.log_param("peak_memory_kind", stats.memory_kind)
        return FinetuneResult(
            model=model,
            trainable_params=n_train,
            adapter_layers=list(att.adapter_layers),
            adapter_bytes=nbytes,
            median_step_s=costmod.median_step_s(stats.step_s, budget.timing_warmup),
            total_train_s=stats.total_s,
            peak_memory_bytes=stats.peak_memory_bytes,
            train_flops=flops,
            extra=extra,
        )


def lora_closed_form(model, rank: int, targets: list[str], layers: list[int]) -> int:
    """LoRA parameters: sum over adapted layers and target maps of r·(d_in + d_out)."""
    from adapters.peft.layer_scores import layer_linears

    n = 0
    for i in layers:
        for name, lin in layer_linears(model, i).items():
            if name in targets:
                n += rank * (lin.in_features + lin.out_features)
    return n


def peft_lora(base: LoadedBase, rank: int, alpha: float, targets: list[str], layers: list[int] | None,
              dropout: float = 0.0):
    """``get_peft_model`` with LoRA on ``targets`` in ``layers`` (None: all layers)."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets),
                     layers_to_transform=None if layers is None else list(layers),
                     layers_pattern=None if layers is None else "layers",
                     bias="none", task_type="CAUSAL_LM")
    return get_peft_model(base.model, cfg)


def lora_layers_present(model) -> list[int]:
    """Decoder-layer indices whose modules carry LoRA weights (``lora_A``) in a peft model."""
    import re

    found = set()
    for name, _ in model.named_parameters():
        if "lora_A" in name:
            m = re.search(r"\.layers\.(\d+)\.", name)
            if m:
                found.add(int(m.group(1)))
    return sorted(found)
