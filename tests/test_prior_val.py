"""The AR prior's held-out validation and early stopping (priors trained to convergence)."""
from __future__ import annotations

import torch

from adapters.tokenizers.ar_prior import ARPrior, PriorBudget, mean_nll, train_prior
from adapters.tokenizers.params import PriorConfig, TokenizerARBudget


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    tokens = (labels[:, None] * 2 + torch.randint(0, 2, (n, 4), generator=g)) % 8  # class-dependent codes
    return tokens, labels


def _prior():
    torch.manual_seed(0)
    return ARPrior(8, 4, 3, PriorConfig(width=16, layers=1, heads=2, mlp_ratio=1.0))


def test_validation_keeps_best_state_and_stops_early():
    tr, va = _data(64, 0), _data(400, 1)  # 64 training sequences: the prior overfits, val CE turns up
    logged = []
    prior = _prior()
    out = train_prior(prior, *tr, PriorBudget(600, 16, 3e-2, 0.0, warmup=5, eval_every=20, patience=3), 0,
                      log=lambda k, v, s: logged.append((k, v, s)), show_progress=False, val=va)
    curve = [(s, v) for k, v, s in logged if k == "AR_prior_val_loss"]
    assert out["steps_run"] < 600  # stopped early
    assert out["val_loss"] == min(v for _, v in curve) and out["best_step"] == min(curve, key=lambda c: c[1])[0]
    assert abs(mean_nll(prior, *va) - out["val_loss"]) < 1e-5  # the prior is left in its best state
    # patience 0: all steps run, still the best state
    p2 = _prior()
    out2 = train_prior(p2, *tr, PriorBudget(100, 16, 3e-2, 0.0, warmup=5, eval_every=30, patience=0), 0,
                       show_progress=False, val=va)
    assert out2["steps_run"] == 100 and abs(mean_nll(p2, *va) - out2["val_loss"]) < 1e-5


def test_no_validation_keeps_the_old_dump():
    assert "prior_val_images" not in TokenizerARBudget().model_dump()
    d = TokenizerARBudget(prior_val_images=500, prior_patience=2).model_dump()
    assert d["prior_val_images"] == 500 and d["prior_patience"] == 2 and d["prior_eval_every"] == 100
