"""Pre-training arms of the sink study: ``llama_baseline`` and ``headwise_rmsnorm`` (arXiv:2605.06611).

``llama_baseline`` pre-trains an unmodified tiny Llama (or Qwen3, ``arch.arch: qwen3``) from
scratch on the local byte corpus (:mod:`adapters.llm_internals.corpus`) with the shared recipe
(:class:`adapters.llm_internals.pretrain.TrainSpec`, the adapter's ``Budget``: the suite budget
with per-method overrides, e.g. the learning rate). ``headwise_rmsnorm`` is only its difference:
the same model with a head-wise RMSNorm (learnable gain) on each head's aggregated output before
o_proj (:func:`adapters.llm_internals.models.attach_headwise_rmsnorm`). Same data order (the
budget's ``data_seed``), same steps, same init seed (the cell seed) for both.

After ``prepare`` the adapter holds ``model`` (trained, eval mode), ``init_model`` (the same
architecture at its initialisation) and ``trained`` (curve and validation losses), read by the
``llm_internals`` metric. The per-step training loss is logged as the curve ``train_loss`` and the
validation loss as ``val_loss`` (MLflow steps = optimiser steps).
"""
from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from adapters.llm_internals.models import n_params
from adapters.llm_internals.params import BaselineParams, HeadNormParams
from adapters.llm_internals.pretrain import HeadNormSpec, TrainSpec, make_model, trained_model
from bench.adapter import Adapter
from bench.registry import register_adapter


def _check_data(ds) -> None:
    from bench.errors import BenchError

    if not all(hasattr(ds, a) for a in ("train", "test", "finetune")):
        raise BenchError("the llm_internals adapters need the `llm_text` data set (dataset: {name: llm_text})")


@register_adapter("llama_baseline")
class LlamaBaseline(Adapter):
    """Unmodified tiny Llama (RMSNorm, SwiGLU, RoPE, no q/k norm), pre-trained from scratch."""

    Params: ClassVar = BaselineParams
    Budget: ClassVar = TrainSpec
    capabilities = frozenset()

    model = None
    init_model = None
    trained = None

    def head_norm(self) -> HeadNormSpec | None:
        return None

    def prepare(self, ctx) -> None:
        import torch

        _check_data(ctx.dataset)
        recipe = TrainSpec.model_validate(ctx.budget)
        every = self.params.curve_every

        def log(key, value, step):
            if step % every == 0 or key != "train_loss" or step == recipe.steps:
                ctx.log_metric(key, value, step)

        threads = torch.get_num_threads()
        self.init_model = make_model(self.params.arch, self.head_norm(), self.seed)
        self.trained = trained_model(self.params.arch, self.head_norm(), recipe, self.seed, ctx.dataset, ctx.cache,
                                     f"{self.registry_name} seed {self.seed} lr {recipe.lr:g}", log_metric=log)
        torch.set_num_threads(threads)
        self.model = self.trained.model
        self.recipe = recipe
        ctx.log_param("n_params", n_params(self.model))
        ctx.log_param("train_cache_key", self.trained.key)
        ctx.log_param("train_cached", self.trained.cached)

    @classmethod
    def leaderboard_figures(cls, board, out_dir: Path) -> list[Path]:
        from adapters.llm_internals.plots import board_loss_curves

        return board_loss_curves(board, out_dir)


@register_adapter("headwise_rmsnorm")
class HeadwiseRMSNorm(LlamaBaseline):
    """The baseline plus head-wise RMSNorm with a learnable gain before o_proj (arXiv:2605.06611)."""

    Params: ClassVar = HeadNormParams

    def head_norm(self) -> HeadNormSpec | None:
        return self.params.head_norm
