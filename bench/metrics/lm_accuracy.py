"""``lm_accuracy``: task accuracy of a fine-tuned model through lm-eval (``finetune`` adapters).

Outputs ``accuracy`` (unweighted mean over the data set's tasks of each task's lm-eval metric:
``acc`` for multiple-choice, ``exact_match`` for generation unless the data set names another)
and ``accuracy_stderr`` (sqrt(sum of the tasks' lm-eval standard errors²) / n_tasks; omitted when a
task's stderr is "N/A"). Per-task
values are logged as ``acc_<task>`` metrics. See :mod:`adapters.peft.evaluate`.
"""
from __future__ import annotations

import re

from pydantic import Field

from bench.metrics.base import Column, Metric, MetricParams, check_finite
from bench.registry import register_metric


class LmAccuracyParams(MetricParams):
    tasks: list[str] | None = Field(None, description="subset of the data set's tasks (default: all)")
    limit: int | None = Field(None, ge=1, description="test documents per task (default: dataset.n_test / all)")
    num_fewshot: int | None = Field(None, ge=0)
    batch_size: int | None = Field(None, ge=1, description="lm-eval batch (default: budget.eval_batch_size)")


@register_metric("lm_accuracy")
class LmAccuracy(Metric):
    requires = ("finetune",)
    Params = LmAccuracyParams

    @classmethod
    def columns(cls, params) -> dict[str, Column]:
        return {"accuracy": Column("accuracy", True, short="acc",
                                   uncertainty="lm-eval stderr over questions")}

    def compute(self, adapter, ctx, params: LmAccuracyParams) -> dict[str, float]:
        from adapters.peft.evaluate import lm_eval_accuracy, pooled
        from adapters.peft.train import cpu_threads

        ds = ctx.dataset
        res = getattr(adapter, "result", None)
        if res is None:
            from bench.errors import MetricError

            raise MetricError("lm_accuracy: the adapter has no fine-tuning result (prepare did not run finetune)")
        tasks = params.tasks or ds.tasks
        bs = params.batch_size or int(ctx.budget.get("eval_batch_size", 32))
        limit = params.limit or ds.test.limit
        threads = ctx.budget.get("cpu_threads") if getattr(ctx.device, "type", "cpu") == "cpu" else None
        with cpu_threads(threads):
            per = lm_eval_accuracy(res.model, adapter.tokenizer, tasks, ds.include_path, ds.include_defaults,
                                   batch_size=bs, limit=limit, num_fewshot=params.num_fewshot,
                                   metrics=getattr(ds, "metrics", None))
        for t, d in per.items():
            key = "acc_" + re.sub(r"[^A-Za-z0-9_]", "_", t)
            ctx.log_metric(key, d["value"])
            ctx.log_param(f"{key}_metric", d["metric"])
            if d.get("n") is not None:
                ctx.log_param(f"{key}_n", d["n"])
        acc, se = pooled(per)
        # a task without a stderr (lm-eval's "N/A") leaves the pooled stderr missing, never 0
        return check_finite({"accuracy": acc, **({"accuracy_stderr": se} if se is not None else {})}, "lm_accuracy")
