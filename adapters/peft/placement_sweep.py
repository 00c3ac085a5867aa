"""The Layer Card judged as a ranking (Xu et al., arXiv:2602.04019, placement study).

"Card top-k vs one random draw" cannot rank a placement rule. This adapter fine-tunes **every**
k-of-L placement (C(L, k): 28 for 2 of 8), or a seeded random sample of ``max_placements`` of them
(count stated in the cell's params and metrics), with the same LoRA configuration, budget
(``sweep_steps``) and seed, scores each by lm-eval test accuracy (``eval_limit`` documents per
task), and reports where the card's pick ranks:

* ``placement_pct``    -- percentile rank of the card's pick, 100 x (#worse + 0.5 x #tied others) /
  (n - 1): 100 = best of all placements, 50 = what a random placement scores in expectation;
* ``placement_regret`` -- best placement's accuracy minus the card pick's (>= 0);
* ``placement_n``      -- placements trained; ``placement_rank`` (1 = best), and the percentiles of
  the method note's fixed rules (``placement_pct_top|bottom|mid|uniform``) for comparison.

Every placement's accuracy goes to ``placements.csv`` in the cell's artefacts. The card's pick is
trained last and kept: it is the cell's model (so ``lm_accuracy`` scores it on the full test
split) and its cost record carries the card's own cost (:meth:`LayerCardLoRA.finetune`).
"""
from __future__ import annotations

import csv
import itertools
import math
import random
import time

from adapters.peft.adapter_base import PeftAdapter
from adapters.peft.layer_card import LayerCardLoRA
from adapters.peft.layer_scores import fixed_placement
from bench.registry import register_adapter
from adapters.peft.params import PlacementSweepParams  # noqa: F401  (declared in the light module)

RULES = ("top", "bottom", "mid", "uniform")


def enumerate_placements(n_layers: int, k: int, limit: int | None = None, seed: int = 0,
                         keep: list[tuple[int, ...]] = ()) -> list[tuple[int, ...]]:
    """The k-of-``n_layers`` placements (sorted int tuples) to train, each exactly once.

    ``limit`` None or >= C(n, k): all of them, in lexicographic order. Otherwise a sample of
    ``limit`` distinct placements drawn with ``random.Random(seed)``, always containing ``keep``
    (e.g. the card's pick), in lexicographic order. Raises ValueError for k outside [1, n] or a
    ``limit`` smaller than ``len(keep)``.
    """
    if not 1 <= k <= n_layers:
        raise ValueError(f"k must be in [1, {n_layers}], got {k}")
    total = math.comb(n_layers, k)
    keep = sorted({tuple(sorted(p)) for p in keep})
    if limit is None or limit >= total:
        return list(itertools.combinations(range(n_layers), k))
    if limit < len(keep):
        raise ValueError(f"params.max_placements: {limit} < the {len(keep)} placements that must be in the sample")
    rng = random.Random(f"placements:{n_layers}:{k}:{seed}")
    chosen = set(keep)
    while len(chosen) < limit:  # rejection sampling: C(n, k) may be far too large to list
        chosen.add(tuple(sorted(rng.sample(range(n_layers), k))))
    return sorted(chosen)


def percentile_rank(scores: list[float], i: int) -> float:
    """100 x (#scores below scores[i] + 0.5 x #others equal) / (n - 1); 50 for n == 1."""
    n = len(scores)
    if n == 1:
        return 50.0
    below = sum(s < scores[i] for s in scores)
    ties = sum(s == scores[i] for s in scores) - 1
    return 100.0 * (below + 0.5 * ties) / (n - 1)


@register_adapter("layer_placements")
class LayerPlacements(LayerCardLoRA):
    """Every placement fine-tuned; the card's pick ranked among them."""

    Params = PlacementSweepParams
    records: list[dict] | None = None

    def score(self, model, task) -> float:
        """Test accuracy used to rank placements (lm-eval, ``eval_limit`` docs per task)."""
        from adapters.peft.evaluate import lm_eval_accuracy, pooled

        bs = int(self._budget.eval_batch_size)
        per = lm_eval_accuracy(model, self.tokenizer, task.tasks, task.include_path, task.include_defaults,
                               batch_size=bs, limit=self.params.eval_limit, metrics=getattr(task, "metrics", None))
        return pooled(per)[0]

    def finetune(self, base_model, task, budget, seed: int):
        if isinstance(budget, dict):
            budget = self.Budget.model_validate(budget)
        p = self.params
        if p.sweep_steps is not None:
            budget = budget.model_copy(update={"steps": p.sweep_steps,
                                               "warmup_steps": min(budget.warmup_steps, p.sweep_steps // 4),
                                               "timing_warmup": min(budget.timing_warmup, p.sweep_steps // 4)})
        self._budget = budget
        L = base_model.num_layers
        pick = tuple(sorted(self.layers))
        rules = {r: tuple(fixed_placement(r, L, p.k, seed)) for r in RULES}
        todo = enumerate_placements(L, p.k, p.max_placements, p.sample_seed, keep=[pick, *rules.values()])
        order = [s for s in todo if s != pick] + [pick]  # the pick last: its model stays attached
        self.records = []
        result = None
        for S in order:
            t0 = time.perf_counter()
            self.layers = list(S)
            if S == pick:
                result = LayerCardLoRA.finetune(self, base_model, task, budget, seed)
                model = result.model
            else:
                self._quiet = True
                try:
                    model = PeftAdapter.finetune(self, base_model, task, budget, seed).model
                finally:
                    self._quiet = False
            acc = self.score(model, task)
            self.records.append({"layers": "-".join(map(str, S)), "accuracy": acc, "card_pick": int(S == pick),
                                 "rules": ",".join(r for r, v in rules.items() if v == S),
                                 "seconds": time.perf_counter() - t0})
            if S != pick:
                model.unload()  # LoRA layers out: the frozen base is shared by the next placement
                for q in base_model.model.parameters():
                    q.requires_grad_(False)
        accs = [r["accuracy"] for r in self.records]
        ip = len(accs) - 1
        extra = {"placement_n": float(len(accs)), "placement_pct": percentile_rank(accs, ip),
                 "placement_regret": max(accs) - accs[ip], "placement_best_acc": max(accs),
                 "placement_median_acc": sorted(accs)[len(accs) // 2],
                 "placement_rank": float(1 + sum(a > accs[ip] for a in accs)),
                 "placement_total": float(math.comb(L, p.k))}
        for r, S in rules.items():
            extra[f"placement_pct_{r}"] = percentile_rank(accs, order.index(S))
        result.extra.update(extra)
        self.layers = list(pick)
        ctx = getattr(self, "_ctx", None)
        if ctx is not None and getattr(ctx, "artifact_dir", None) is not None:
            with open(ctx.artifact_dir / "placements.csv", "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=list(self.records[0]))
                w.writeheader()
                w.writerows(sorted(self.records, key=lambda r: -r["accuracy"]))
        return result
