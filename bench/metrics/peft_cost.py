"""``peft_cost``: the cost record of a fine-tuning run (``finetune`` adapters).

Reads :class:`bench.adapter.FinetuneResult` (see :mod:`adapters.peft.cost` for how each is measured):
``trainable_params`` (count), ``adapter_layers`` (number of decoder layers carrying adapter
weights), ``adapter_bytes`` (bytes written by save_pretrained), ``s_per_step`` (median s/step
after warm-up, wall clock), ``cpu_s_per_step`` (the same in process CPU seconds, all threads:
on a shared CPU box less sensitive to other processes' load), ``train_s`` (total training s), ``peak_mem_mb`` (MiB; CUDA max allocated on GPU,
peak RSS on CPU), ``train_flops`` (estimate, count).
"""
from __future__ import annotations

from bench.metrics.base import Column, Metric, MetricParams, check_finite
from bench.registry import register_metric

COLUMNS = {
    "trainable_params": Column("trainable params", False, "params", kind="cost", short="params"),
    "adapter_layers": Column("adapter layers", False, "layers", kind="cost", short="layers"),
    "adapter_bytes": Column("adapter size", False, "B", kind="cost", short="size"),
    "s_per_step": Column("s/step", False, "s", kind="cost", short="s/st"),
    "cpu_s_per_step": Column("CPU s/step", False, "s", kind="cost", short="cpu/st"),
    "train_s": Column("train time", False, "s", kind="cost", short="train"),
    "peak_mem_mb": Column("peak memory", False, "MiB", kind="cost", short="mem"),
    "train_flops": Column("train FLOPs", False, "FLOP", kind="cost", short="FLOPs"),
}


@register_metric("peft_cost")
class PeftCost(Metric):
    requires = ("finetune",)
    Params = MetricParams

    @classmethod
    def columns(cls, params) -> dict[str, Column]:
        return dict(COLUMNS)

    def compute(self, adapter, ctx, params) -> dict[str, float]:
        r = getattr(adapter, "result", None)
        if r is None:
            from bench.errors import MetricError

            raise MetricError("peft_cost: the adapter has no fine-tuning result (prepare did not run finetune)")
        return check_finite({
            "trainable_params": r.trainable_params,
            "adapter_layers": len(r.adapter_layers),
            "adapter_bytes": r.adapter_bytes,
            "s_per_step": r.median_step_s,
            "cpu_s_per_step": r.extra.get("cpu_s_per_step", float("nan")),
            "train_s": r.total_train_s,
            "peak_mem_mb": r.peak_memory_bytes / 2**20,
            "train_flops": r.train_flops,
        }, "peft_cost")


FIT_COLUMNS = {
    "train_loss": Column("final train loss (mean of last 10 steps)", False, "nats/token", group="likelihood",
                         short="trL"),
    "val_loss_final": Column("final validation loss", False, "nats/token", group="likelihood", short="vaL"),
    "placement_pct": Column("card pick's percentile among all placements (by test accuracy)", True, "%",
                            short="pct"),
    "placement_regret": Column("card pick's regret vs the best placement (test accuracy)", False, "acc",
                               short="regr"),
    "placement_n": Column("placements trained", None, "count", short="nPl"),
}
"""``peft_fit``'s outputs: ``train_loss`` / ``val_loss_final`` for every arm (did it learn? does it
generalise?), and the placement-ranking statistics of the ``layer_placements`` sweep (only that
adapter has them; other rows show none)."""
_FIT_SOURCES = {"train_loss": "final_train_loss", "val_loss_final": "final_val_loss",
                "placement_pct": "placement_pct", "placement_regret": "placement_regret",
                "placement_n": "placement_n"}


@register_metric("peft_fit")
class PeftFit(Metric):
    """Training-fit record of a fine-tuning run, read from ``FinetuneResult.extra`` (see
    :func:`adapters.peft.adapter_base.PeftAdapter.finetune` and :mod:`adapters.peft.placement_sweep`)."""

    requires = ("finetune",)
    Params = MetricParams

    @classmethod
    def columns(cls, params) -> dict[str, Column]:
        return dict(FIT_COLUMNS)

    def compute(self, adapter, ctx, params) -> dict[str, float]:
        r = getattr(adapter, "result", None)
        if r is None:
            from bench.errors import MetricError

            raise MetricError("peft_fit: the adapter has no fine-tuning result (prepare did not run finetune)")
        out = {k: float(r.extra[src]) for k, src in _FIT_SOURCES.items() if src in r.extra}
        return check_finite(out, "peft_fit")
