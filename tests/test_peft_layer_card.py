"""Layer Card quantities: resnorm = normalised gradient norm = projected residual on a linear toy."""
from __future__ import annotations

import math

import torch

from peft_helpers import PAIRS, tiny_base


def _toy(N=200, d_in=6, d_out=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(N, d_in, generator=g, dtype=torch.float64) @ torch.diag(torch.tensor([3.0, 2, 1, 1, .5, .1], dtype=torch.float64))
    W0 = torch.randn(d_out, d_in, generator=g, dtype=torch.float64)
    T = X @ torch.randn(d_in, d_out, generator=g, dtype=torch.float64) + torch.randn(N, d_out, generator=g, dtype=torch.float64)
    return X, W0, T


def test_resnorm_equals_projected_residual_and_normalised_gradient():
    from adapters.peft.layer_scores import map_stats

    X, W0, T = _toy()
    N, d = X.shape
    lin = torch.nn.Linear(d, W0.shape[0], bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(W0)
    captured = {}
    Y = lin(X)
    Y.register_hook(lambda g: captured.setdefault("G", g))
    loss = 0.5 * ((Y - T) ** 2).sum() / N  # squared loss, mean over tokens
    loss.backward()
    st = map_stats(X, G=captured["G"], ridge=0.0)
    # (a) by hand: least-squares projection of the residual R = T - X W0ᵀ onto span(X)
    R = T - X @ W0.T
    coef = torch.linalg.lstsq(X, R).solution
    proj = X @ coef
    by_hand = float(torch.linalg.norm(proj) / math.sqrt(N))
    # (b) by hand: covariance-normalised gradient || dL/dW Sigma^{-1/2} ||_F
    Sigma = X.T @ X / N
    ev, V = torch.linalg.eigh(Sigma)
    inv_sqrt = V @ torch.diag(ev.rsqrt()) @ V.T
    normalised = float(torch.linalg.norm(lin.weight.grad @ inv_sqrt))
    assert abs(st.res - by_hand) < 1e-9 * max(1.0, by_hand)
    assert abs(st.res - normalised) < 1e-9 * max(1.0, by_hand)
    # same from dL/dW directly
    assert abs(map_stats(X, grad_W=lin.weight.grad, ridge=0.0).res - by_hand) < 1e-9
    # activation energy: tr(Sigma^-1) / d and the condition number
    assert abs(st.e_act - float((1 / ev).sum()) / d) < 1e-9 * st.e_act
    assert abs(st.kappa - float(ev.max() / ev.min())) < 1e-6 * st.kappa
    # the natural-gradient step is -dL/dW Sigma^-1
    step = (st.step_left @ st.step_right).double()
    assert torch.allclose(step, -(lin.weight.grad @ torch.linalg.inv(Sigma)).to(step.dtype), atol=1e-4, rtol=1e-4)


def test_resnorm_is_zero_when_residual_is_outside_span():
    from adapters.peft.layer_scores import map_stats

    X, W0, _ = _toy()
    T = X @ W0.T  # zero residual
    G = (X @ W0.T - T) / X.shape[0]
    assert map_stats(X, G=G, ridge=0.0).res < 1e-12


def test_card_on_tiny_qwen3_matches_autograd_weight_gradients():
    from adapters.peft.layer_scores import card_statistics, coupling_matrix, layer_linears, map_stats
    from adapters.peft.train import collate

    base = tiny_base(layers=3)
    model = base.model
    batch = collate(base.tokenizer, PAIRS[:6], 64, "cpu")
    stats = card_statistics(model, batch, ridge=1e-4)
    assert sorted(stats) == [0, 1, 2] and all(len(v) == 7 for v in stats.values())
    assert all(math.isfinite(s.res) and s.res > 0 and s.e_act > 0 for v in stats.values() for s in v.values())
    # the hooks' gradient equals autograd's dL/dW for a map (weights made trainable just here)
    lin = layer_linears(model, 1)["down_proj"]
    lin.weight.requires_grad_(True)
    xs = {}
    def keep_x(m, a, o):  # returns None: the output stays as it is
        xs["x"] = a[0].detach()

    h = lin.register_forward_hook(keep_x)
    model(**batch).loss.backward()
    h.remove()
    lin.weight.requires_grad_(False)
    keep = batch["attention_mask"].reshape(-1).bool()
    X = xs["x"].reshape(-1, xs["x"].shape[-1])[keep]
    ref = map_stats(X, grad_W=lin.weight.grad, ridge=1e-4)
    assert abs(ref.res - stats[1]["down_proj"].res) < 1e-6 * ref.res
    rho = coupling_matrix(model, batch, stats)
    assert len(rho) == 3 and all(abs(rho[i][i] - 1) < 1e-6 for i in range(3))
    assert all(0 <= x <= 1 + 1e-9 for row in rho for x in row)
    # the Gaussian sketch used for large vocabularies keeps the cosines
    sk = coupling_matrix(model, batch, stats, sketch_above=0, sketch_dim=512)
    assert max(abs(a - b) for ra, rb in zip(rho, sk) for a, b in zip(ra, rb)) < 0.1
