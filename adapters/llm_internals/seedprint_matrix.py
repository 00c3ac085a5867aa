"""``seedprint_matrix``: the matrix of models SeedPrint is evaluated on, built inside one cell.

Design: a fingerprint is a property of *pairs* of models, so one cell holds the whole
matrix and the plan / CellSpec model stays as it is. The cell with seed s uses the init seeds
``S = [s*n_models, ..., s*n_models + n_models - 1]`` and, for each init seed i, three models:

* ``init_i``      -- the architecture at initialisation (seed i);
* ``trained_i``   -- pre-trained on the same stream in the same order (the budget's recipe, shared
  data_seed) -- the same cached function and cache key as an ``llama_baseline`` cell with seed i and
  the same recipe, so a suite whose baseline arm trained seed i already has it;
* ``finetuned_i`` -- ``trained_i`` continued on a different corpus (Python sources,
  ``finetune_steps`` at ``finetune_lr``; cached with the parent's key in its hash).

Every model is cached by configuration hash (:mod:`adapters.llm_internals.pretrain`), so rerunning
a cell, or another cell needing the same model, loads it. The ``seedprint`` metric compares all pairs.
"""
from __future__ import annotations

from typing import ClassVar

from adapters.llm_internals.headwise_rmsnorm import _check_data
from adapters.llm_internals.params import MatrixParams
from adapters.llm_internals.pretrain import TrainSpec, make_model, trained_model
from bench.adapter import Adapter
from bench.registry import register_adapter


@register_adapter("seedprint_matrix")
class SeedPrintMatrix(Adapter):
    """Init / trained / fine-tuned models of several init seeds (one cell = one matrix)."""

    Params: ClassVar = MatrixParams
    Budget: ClassVar = TrainSpec
    capabilities = frozenset()

    models: dict | None = None

    def init_seeds(self) -> list[int]:
        n = self.params.n_models
        return [self.seed * n + i for i in range(n)]

    def prepare(self, ctx) -> None:
        _check_data(ctx.dataset)
        p = self.params
        recipe = TrainSpec.model_validate(ctx.budget)
        ft = recipe.model_copy(update={"steps": p.finetune_steps, "lr": p.finetune_lr,
                                       "warmup": min(recipe.warmup, p.finetune_steps // 5),
                                       "eval_every": p.finetune_steps})
        self.models = {}
        self.seeds = self.init_seeds()
        for i in self.seeds:
            self.models[f"init_{i}"] = make_model(p.arch, p.head_norm, i)
            tr = trained_model(p.arch, p.head_norm, recipe, i, ctx.dataset, ctx.cache, f"seedprint trained_{i}")
            self.models[f"trained_{i}"] = tr.model
            f = trained_model(p.arch, p.head_norm, ft, i, ctx.dataset, ctx.cache, f"seedprint finetuned_{i}",
                              corpus="finetune", parent=tr)
            self.models[f"finetuned_{i}"] = f.model
            ctx.log_metric("pretrain_val_loss", tr.val[max(tr.val)], i)
            ctx.log_metric("finetune_val_loss", f.val[max(f.val)], i)
        ctx.log_param("init_seeds", ",".join(map(str, self.seeds)))

    @staticmethod
    def seed_of(name: str) -> int:
        return int(name.rsplit("_", 1)[1])
