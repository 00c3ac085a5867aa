"""``peft_tasks``: text fine-tuning tasks for the PEFT suites, read through lm-eval task objects.

Suite block::

    dataset:
      name: peft_tasks
      n_train: 2000            # optional: first n (context, continuation) training pairs, pooled
      n_test: 400              # optional: lm-eval ``limit`` (test documents per task)
      params:
        tasks: [peft_topic, peft_same_topic]     # generated here (adapters/peft/tasks.py), or
        # tasks: [hellaswag, mathqa, gsm8k]      # standard lm-eval tasks from your HF cache
        seed: 1234                                # generation seed of the generated tasks
        sizes: {train: 1000, validation: 200, test: 400}   # per generated task
        include_defaults: false  # true for standard tasks (default: true iff a task is not generated)
        n_train_per_task: null   # cap training docs per task (standard tasks are large)
        metrics: {}              # task -> lm-eval metric key, e.g. {gsm8k: "exact_match,strict-match"}

Generated tasks are written at load time (milliseconds; cached by hash) and read at once.
Standard tasks are loaded lazily, when the first cell's adapter calls :meth:`TextTasks.ensure_loaded`
after it has checked its base model, so a suite whose weights are missing fails on the weights
first and lm-eval's task index (about a minute) is never built for nothing.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bench.errors import SuiteError
from adapters.peft.tasks import GENERATED, TextSplit, TextTasks, build_text_tasks, offline_env, write_generated
from bench.registry import register_dataset


class PeftTaskParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: list[str] = Field(default_factory=lambda: list(GENERATED), min_length=1)
    seed: int = 1234
    sizes: dict[Literal["train", "validation", "test"], Annotated[int, Field(ge=1, le=10_000_000)]] = Field(
        default_factory=lambda: {"train": 1000, "validation": 200, "test": 400},
        description="documents per generated task and split (each >= 1)")
    include_defaults: bool | None = None
    n_train_per_task: int | None = Field(None, ge=1)
    n_validation_per_task: int | None = Field(200, ge=1)
    metrics: dict[str, str] = Field(default_factory=dict)

    @field_validator("tasks")
    @classmethod
    def _generated_names(cls, v: list[str]) -> list[str]:
        # names starting peft_ are the generated tasks; any other name is an lm-eval task (checked when read)
        bad = [t for t in v if t.startswith("peft_") and t not in GENERATED]
        if bad:
            raise ValueError(f"unknown generated task(s) {bad}; generated tasks: {list(GENERATED)}")
        return v


class LazyTextTasks(TextTasks):
    """:class:`TextTasks` whose pairs are read on :meth:`ensure_loaded` (standard lm-eval tasks)."""

    def __init__(self, tasks, include_path, include_defaults, source, n_train_per_task, n_val, metrics):
        super().__init__(name="peft_tasks", tasks=list(tasks), include_path=include_path,
                         include_defaults=include_defaults, train=TextSplit([]), validation=TextSplit([]),
                         test=TextSplit([]), source=source, fingerprint="")
        self._args = (n_train_per_task, n_val)
        self.metrics = metrics
        self._loaded = False

    def ensure_loaded(self) -> None:
        if self._loaded:
            return
        full = build_text_tasks(self.tasks, self.include_path, self.include_defaults, self.source, *self._args)
        n_tr, n_te = self.train.limit, self.test.limit
        self.train, self.validation, self.test = full.train.head(n_tr), full.validation, full.test.head(n_te)
        self.fingerprint, self.per_task_train = full.fingerprint, full.per_task_train
        self._loaded = True


@register_dataset("peft_tasks")
class PeftTasks:
    """Generated short-answer tasks (qwen3-tiny) or standard lm-eval tasks (qwen3-8b)."""

    Params = PeftTaskParams  # ``dataset.params``, checked by plan resolution

    @staticmethod
    def train_examples(spec) -> int | None:
        """Training documents of the generated tasks (None for standard lm-eval tasks: known when read)."""
        try:
            p = PeftTaskParams.model_validate(spec.params)
        except ValidationError:
            return None
        if not all(t in GENERATED for t in p.tasks):
            return None
        per = p.sizes.get("train", 1000)
        return len(p.tasks) * (min(per, p.n_train_per_task) if p.n_train_per_task else per)

    @staticmethod
    def load(spec) -> Any:
        try:
            p = PeftTaskParams.model_validate(spec.params)
        except ValidationError as e:
            raise SuiteError(f"dataset.params: {e}") from None
        generated = all(t in GENERATED for t in p.tasks)
        offline_env(project_home=generated)
        include_defaults = (not generated) if p.include_defaults is None else p.include_defaults
        if generated:
            root = write_generated(p.tasks, p.seed, {**{"train": 1000, "validation": 200, "test": 400}, **p.sizes})
            tt = build_text_tasks(p.tasks, root / "lm_eval", include_defaults, f"generated:{root}",
                                  p.n_train_per_task, p.n_validation_per_task)
            tt.metrics = p.metrics
            return tt
        inc = Path(spec.root) if spec.root else None
        return LazyTextTasks(p.tasks, inc, include_defaults, f"lm-eval:{','.join(p.tasks)}",
                             p.n_train_per_task, p.n_validation_per_task, p.metrics)
