"""``seedprint``: the SeedPrint fingerprint test over a ``seedprint_matrix`` cell's models.

All unordered pairs of the cell's 3·n models (init / trained / fine-tuned of n init seeds) are
tested (:func:`adapters.llm_internals.seedprint.seedprint_test`; base = the earlier stage, order
init < trained < fine-tuned); a pair is *positive* (same lineage) when both models come from the
same init seed. Outputs:

* ``sp_acc`` / ``sp_fpr`` / ``sp_tpr``: decisions p < ``alpha`` (0.01) against the labels;
  ``sp_auc`` ROC AUC of z, ``sp_tpr_at_1fpr`` TPR at FPR <= 1 % (scikit-learn);
  ``sp_acc_emp``: accuracy when p comes from the empirical random-matrix null instead.
* Paper tables (arXiv:2509.26404, toy models): ``t1_min_p_init_cross`` (init_i vs init_j, expect
  > α), ``t2_max_p_init_trained`` (init_s vs trained_s, expect < α), ``t3_min_p_trained_cross``
  (same data and order, different seeds, expect > α), ``t4_max_p_init_finetuned`` and
  ``t4_min_p_finetuned_cross`` (continued training on another corpus).
* Nulls through the full pipeline: ``null_random_fpr`` / ``null_random_ks_p`` (``null_trials``
  pairs of independent N(0, I) matrices of the same N x D: share with p < α, KS p against
  uniform), ``null_shuffle_fpr`` / ``null_shuffle_ks_p`` (every pair with the target's sample order
  permuted).
* Baselines on the same pairs: ``cka_auc`` / ``cka_tpr_at_1fpr`` (linear CKA of the same features),
  ``wcos_auc`` / ``wcos_tpr_at_1fpr`` (cosine of the flattened weights, white-box).

Artefacts: ``plots/pvalue_matrix_s<seed>.png`` and ``seedprint_pairs_s<seed>.csv``.
"""
from __future__ import annotations

import csv
from typing import Literal

import numpy as np
from pydantic import Field

from adapters.llm_internals import plots
from adapters.llm_internals.params import VOCAB
from bench.errors import MetricError
from bench.metrics.base import Column, Metric, MetricParams
from bench.registry import register_metric


class SeedPrintParams(MetricParams):
    n_probe: int = Field(1000, ge=20, description="N random probe sequences")
    probe_seq: int = Field(64, ge=2, description="T tokens per probe sequence")
    probe_seed: int = Field(42, description="probe generator seed (the official code's 42)")
    k: int = Field(16, ge=1, description="bottom-k identity dimensions per model (25 % of D=64 here)")
    mode: Literal["coset", "base"] = Field("coset", description="intersect both models' bottom-k (coset) or base's only")
    temp: float = Field(10.0, gt=0, description="softmax temperature of the row normalisation")
    alternative: Literal["greater", "code", "two-sided"] = "greater"
    alpha: float = Field(0.01, gt=0, lt=1, description="significance level of the decisions")
    null_trials: int = Field(200, ge=10, description="random-matrix pairs in the empirical null")
    plots: bool = True


COLUMNS = {
    "sp_acc": Column("SeedPrint acc@α", True),
    "sp_fpr": Column("SeedPrint FPR@α", False),
    "sp_tpr": Column("SeedPrint TPR@α", True),
    "sp_auc": Column("SeedPrint AUC", True),
    "sp_tpr_at_1fpr": Column("SeedPrint TPR@1%FPR", True),
    "sp_acc_emp": Column("SeedPrint acc (emp. null)", True),
    "cka_auc": Column("CKA AUC", True),
    "cka_tpr_at_1fpr": Column("CKA TPR@1%FPR", True),
    "wcos_auc": Column("weight-cos AUC", True),
    "wcos_tpr_at_1fpr": Column("weight-cos TPR@1%FPR", True),
    "t1_min_p_init_cross": Column("T1 min p init×init", True),
    "t2_max_p_init_trained": Column("T2 max p init→trained", False),
    "t3_min_p_trained_cross": Column("T3 min p trained×trained", True),
    "t4_max_p_init_finetuned": Column("T4 max p init→finetuned", False),
    "t4_min_p_finetuned_cross": Column("T4 min p cross finetuned", True),
    "null_random_fpr": Column("null FPR (random)", False),
    "null_random_ks_p": Column("null KS p (random)", True),
    "null_shuffle_fpr": Column("null FPR (shuffled)", False),
    "null_shuffle_ks_p": Column("null KS p (shuffled)", True),
    "sp_mean_dims": Column("identity dims k'", True),
}

STAGES = ("init", "trained", "finetuned")


def roc_summary(labels: list[int], scores: list[float]) -> tuple[float, float]:
    """(ROC AUC, TPR at FPR <= 1 %) of ``scores`` (higher = more likely positive)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    y, s = np.asarray(labels), np.asarray(scores, dtype=float)
    if y.min() == y.max():
        raise MetricError("seedprint: the pairs are all of one class; n_models must be >= 2")
    fpr, tpr, _ = roc_curve(y, s)
    return float(roc_auc_score(y, s)), float(tpr[fpr <= 0.01].max())


@register_metric("seedprint")
class SeedPrint(Metric):
    requires = ()
    Params = SeedPrintParams

    @classmethod
    def columns(cls, params) -> dict[str, Column]:
        return dict(COLUMNS)

    def compute(self, adapter, ctx, params) -> dict[str, float]:
        # torch and scipy (through .seedprint) are imported here: checking a suite (the light route,
        # adapters.llm_internals.params) loads neither
        from adapters.llm_internals.seedprint import (empirical_null, features, ks_uniform, linear_cka, probe_inputs,
                                                      seedprint_test, weight_cosine)

        if getattr(adapter, "trained", None) is not None or getattr(adapter, "model", None) is not None:
            return {}  # a pre-training arm (llama_baseline / headwise_rmsnorm) or a local checkpoint: not applicable
        models = getattr(adapter, "models", None)
        if not models:
            raise MetricError("seedprint: the adapter holds no model matrix (use the seedprint_matrix adapter)")
        names = [f"{st}_{i}" for st in STAGES for i in adapter.seeds]
        ids = probe_inputs(params.n_probe, params.probe_seq, VOCAB, params.probe_seed)
        feats = {n: features(models[n], ids) for n in names}
        seed = adapter.seed_of
        M = len(names)
        pmat = np.ones((M, M))
        rows, labels, z, cka, wcos, pv = [], [], [], [], [], []
        for a in range(M):
            for b in range(a + 1, M):
                na, nb = names[a], names[b]
                v = seedprint_test(feats[na], feats[nb], params.k, params.mode, params.temp, params.alternative)
                pmat[a, b] = pmat[b, a] = v.p
                c = linear_cka(feats[na], feats[nb])
                w = weight_cosine(models[na], models[nb])
                same = int(seed(na) == seed(nb))
                rows.append((na, nb, same, v.tau, v.z, v.p, v.n_dims, c, w))
                labels.append(same), z.append(v.z), cka.append(c), wcos.append(w), pv.append(v.p)
        labels_a, pv_a, z_a = np.asarray(labels), np.asarray(pv), np.asarray(z)
        pred = pv_a < params.alpha
        out = {"sp_acc": float((pred == labels_a.astype(bool)).mean()),
               "sp_fpr": float(pred[labels_a == 0].mean()), "sp_tpr": float(pred[labels_a == 1].mean())}
        out["sp_auc"], out["sp_tpr_at_1fpr"] = roc_summary(labels, z)
        out["cka_auc"], out["cka_tpr_at_1fpr"] = roc_summary(labels, cka)
        out["wcos_auc"], out["wcos_tpr_at_1fpr"] = roc_summary(labels, wcos)
        D = next(iter(feats.values())).shape[1]
        null = empirical_null(params.n_probe, D, params.k, params.null_trials, 1000 + ctx.seed, params.mode,
                              params.temp, params.alternative)
        nz = np.array([v.z for v in null])
        p_emp = np.array([(1 + (nz >= zz).sum()) / (1 + len(nz)) for zz in z_a])
        out["sp_acc_emp"] = float(((p_emp < params.alpha) == labels_a.astype(bool)).mean())
        out["null_random_fpr"] = float(np.mean([v.p < params.alpha for v in null]))
        out["null_random_ks_p"] = ks_uniform([v.p for v in null])
        shuf = []
        for i, (na, nb, *_rest) in enumerate(rows):
            shuf += empirical_null(params.n_probe, D, params.k, 1, 5000 + i, params.mode, params.temp,
                                   params.alternative, shuffle_of=(feats[na], feats[nb]))
        out["null_shuffle_fpr"] = float(np.mean([v.p < params.alpha for v in shuf]))
        out["null_shuffle_ks_p"] = ks_uniform([v.p for v in shuf])
        out["sp_mean_dims"] = float(np.mean([r[6] for r in rows]))

        def sel(st_a: str, st_b: str, same: bool) -> list[float]:
            """p of the pairs whose stages are {st_a, st_b} and whose seeds agree iff ``same``."""
            want = sorted((st_a, st_b))
            return [r[5] for r in rows
                    if sorted((r[0].split("_")[0], r[1].split("_")[0])) == want and bool(r[2]) == same]

        out["t1_min_p_init_cross"] = min(sel("init", "init", False))
        out["t2_max_p_init_trained"] = max(sel("init", "trained", True))
        out["t3_min_p_trained_cross"] = min(sel("trained", "trained", False))
        out["t4_max_p_init_finetuned"] = max(sel("init", "finetuned", True))
        out["t4_min_p_finetuned_cross"] = min(sel("init", "finetuned", False) + sel("finetuned", "finetuned", False))
        path = ctx.artifact_dir / f"seedprint_pairs_s{ctx.seed}.csv"
        with open(path, "w", newline="") as f:
            wr = csv.writer(f)
            wr.writerow(["model_a", "model_b", "same_seed", "tau", "z", "p", "n_dims", "cka", "weight_cos"])
            wr.writerows(rows)
        if params.plots:
            plots.pvalue_matrix(pmat, names, ctx.artifact_dir / "plots" / f"pvalue_matrix_s{ctx.seed}.png",
                                f"SeedPrint p-values, cell seed {ctx.seed} (N={params.n_probe}, k={params.k}, "
                                f"{params.mode})")
        return out
