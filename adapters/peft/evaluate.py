"""Accuracy through lm-eval (EleutherAI lm-evaluation-harness 0.4.x), fully offline.

``HFLM(pretrained=<model object>, tokenizer=<tokenizer object>, batch_size=N)`` wraps the adapted
model as it is in memory (peft model, or base model with the Prefix-Tuning+ hooks), and
``simple_evaluate`` runs the tasks from a ``TaskManager(include_path=..., include_defaults=False)``
(the repository's task YAMLs over local JSONL) or, for standard tasks, the built-in index.
``HF_HUB_OFFLINE / HF_DATASETS_OFFLINE / TRANSFORMERS_OFFLINE`` are set to 1; for the generated
tasks ``HF_HOME`` defaults to ``results/cache/hf_home``, for standard tasks the user's cache is
used (:func:`adapters.peft.tasks.offline_env`).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

from adapters.peft.tasks import offline_env, task_manager

# Default lm-eval metric per task output type (filter "none"); gsm8k-style tasks name theirs.
DEFAULT_METRIC = {"multiple_choice": "acc", "generate_until": "exact_match", "loglikelihood": "acc"}


def _pick(res: dict, metric: str | None) -> tuple[str, float, float | None]:
    """(key, value, stderr) of the requested or first accuracy-like metric in a task's results."""
    keys = [k for k in res if "," in k and not k.endswith("_stderr") and "_stderr," not in k]
    if metric:
        cand = [k for k in keys if k == metric or k.split(",")[0] == metric]
    else:
        cand = [k for k in keys if k.split(",")[0] in ("acc", "exact_match", "acc_norm")]
    if not cand:
        raise KeyError(f"no metric {metric or 'acc/exact_match'} among {keys}")
    k = cand[0]
    name, filt = k.split(",", 1)
    se = res.get(f"{name}_stderr,{filt}")
    v = float(res[k])
    # lm-eval writes "N/A" where it has no stderr: missing, never 0
    se = float(se) if isinstance(se, (int, float)) and math.isfinite(float(se)) else None
    return k, v, se


def lm_eval_accuracy(model, tokenizer, tasks: list[str], include_path: Path | None, include_defaults: bool,
                     batch_size: int = 32, limit: int | None = None, num_fewshot: int | None = None,
                     metrics: dict[str, str] | None = None, seed: int = 1234) -> dict[str, dict]:
    """task -> {"metric", "value", "stderr", "n"} from ``lm_eval.simple_evaluate``.

    ``limit`` caps the number of test documents per task. ``metrics`` maps task -> lm-eval metric
    key (e.g. ``{"gsm8k": "exact_match,strict-match"}``); otherwise acc / exact_match.
    """
    offline_env()
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    for name in ("lm-eval", "lm_eval"):
        logging.getLogger(name).setLevel(logging.ERROR)
    was_training = model.training
    model.eval()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    tm = task_manager(include_path, include_defaults)
    out = lm_eval.simple_evaluate(
        model=lm, tasks=list(tasks), task_manager=tm, limit=limit, num_fewshot=num_fewshot,
        log_samples=False, random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
        fewshot_random_seed=seed, bootstrap_iters=1000, verbosity="ERROR",
    )
    model.train(was_training)
    res = {}
    for t in tasks:
        r = out["results"][t]
        key, v, se = _pick(r, (metrics or {}).get(t))
        n = out.get("n-samples", {}).get(t, {}).get("effective")
        res[t] = {"metric": key, "value": v, "stderr": se, "n": n}
    return res


def pooled(per_task: dict[str, dict]) -> tuple[float, float | None]:
    """Unweighted mean over tasks and its standard error sqrt(sum se²) / n_tasks (None if a task has none)."""
    vals = [d["value"] for d in per_task.values()]
    ses = [d.get("stderr") for d in per_task.values()]
    n = len(vals)
    se = None if any(s is None for s in ses) else math.sqrt(sum(s * s for s in ses)) / n
    return sum(vals) / n, se
