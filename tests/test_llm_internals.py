"""LLM-internals family: head-wise RMSNorm, sink metric, interventions, SeedPrint."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from adapters.llm_internals.internals import alpha_k, capture, measure, sink_rate, variance_profile
from adapters.llm_internals.interventions import amplify_variance, self_only_mask
from adapters.llm_internals.models import ArchSpec, HeadRMSNorm, attach_headwise_rmsnorm, build_model
from adapters.llm_internals.seedprint import (empirical_null, features, ks_uniform, linear_cka, probe_inputs,
                                              seedprint_test, weight_cosine)

TINY = ArchSpec(layers=2, hidden=32, heads=4, kv_heads=4, head_dim=8, intermediate=64)


def test_head_rmsnorm_unit_rms_per_head_before_gain():
    torch.manual_seed(0)
    norm = HeadRMSNorm(heads=4, head_dim=8, eps=1e-12)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(8) * 3)
    x = torch.randn(3, 5, 32) * torch.tensor([0.1, 1.0, 50.0, 3.0]).repeat_interleave(8)  # heads of very different scale
    h = norm.normalise(x)  # [3, 5, 4, 8], gain-free
    rms = h.pow(2).mean(-1).sqrt()
    assert torch.allclose(rms, torch.ones_like(rms), atol=1e-4)
    # with the gain: equal to torch's own RMSNorm over each head (an independent reference)
    ref = torch.nn.functional.rms_norm(x.reshape(3, 5, 4, 8), (8,), norm.weight, 1e-12).reshape(3, 5, 32)
    assert torch.allclose(norm(x), ref, atol=1e-5)


def test_attached_head_norm_reaches_o_proj_and_trains():
    model = build_model(TINY, 0)
    norms = attach_headwise_rmsnorm(model, eps=1e-12)  # eps negligible: exact unit RMS
    assert len(norms) == TINY.layers and any(n.endswith("self_attn.head_norm.weight") for n, _ in model.named_parameters())
    ids = torch.randint(0, 256, (4, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), capture(model, attention=False) as rec:
        model.model(input_ids=ids)
    for o in rec["o_in"]:  # gain 1 at init: each head of o_proj's input has unit RMS at every position
        rms = o.reshape(4, 16, TINY.heads, TINY.head_dim).pow(2).mean(-1).sqrt()
        assert torch.allclose(rms, torch.ones_like(rms), atol=1e-3)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    assert norms[0].weight.grad is not None and norms[0].weight.grad.abs().sum() > 0
    # the variance outlier at position 0 of the plain model is removed by the norm (at init)
    plain = build_model(TINY, 0)
    r_ids = torch.randint(0, 256, (64, 32), generator=torch.Generator().manual_seed(2))
    assert measure(plain, r_ids).var_ratio[0] > 3 * measure(model, r_ids).var_ratio[0]


def test_sink_metric_exact_on_hand_made_attention():
    B, H, T = 2, 3, 4
    A = torch.zeros(B, H, T, T)
    for i in range(T):  # head 0: uniform causal; head 1: all mass on token 0; head 2: diagonal
        A[:, 0, i, : i + 1] = 1.0 / (i + 1)
        A[:, 1, i, 0] = 1.0
        A[:, 2, i, i] = 1.0
    A[1, 0] = A[0, 0]
    a0 = alpha_k(A, 0)
    expect_h0 = (1 + 1 / 2 + 1 / 3 + 1 / 4) / 4
    assert torch.allclose(a0, torch.tensor([expect_h0, 1.0, 0.25]), atol=1e-7)
    a2 = alpha_k(A, 2)  # queries i >= 2 only
    assert torch.allclose(a2, torch.tensor([(1 / 3 + 1 / 4) / 2, 0.0, 0.5]), atol=1e-7)
    alpha = torch.stack([a0, torch.tensor([0.31, 0.29, 0.0])])  # [L=2, H=3]
    assert sink_rate(alpha, 0.3) == pytest.approx(3 / 6)  # 0.5208, 1.0 and 0.31 exceed 0.3; 0.25 and 0.29 do not
    with pytest.raises(ValueError):
        alpha_k(A, 4)


def test_self_only_mask_moves_mass_to_k_on_fixed_model():
    model = build_model(TINY, 3)
    k = 5
    ids = torch.randint(0, 256, (64, 24), generator=torch.Generator().manual_seed(4))
    with torch.no_grad(), capture(model) as plain:
        model.model(input_ids=ids)
    with torch.no_grad(), self_only_mask(model, k), capture(model) as masked:
        model.model(input_ids=ids)
    for a in masked["attn"]:  # row k attends only to itself, other rows stay normalised
        assert torch.allclose(a[:, :, k, k], torch.ones_like(a[:, :, k, k]))
        assert torch.allclose(a.sum(-1), torch.ones_like(a.sum(-1)), atol=1e-5)
    for a_p, a_m in zip(plain["attn"], masked["attn"]):
        assert alpha_k(a_m, k).mean() > alpha_k(a_p, k).mean()
    # position k becomes an unaggregated variance outlier like position 0 (layer 0's o_proj input)
    v_plain, v_mask = variance_profile(plain["o_in"][0]), variance_profile(masked["o_in"][0])
    neigh = torch.cat([v_mask[k - 2:k], v_mask[k + 1:k + 3]]).mean()
    assert v_mask[k] > 2.5 * neigh and v_mask[k] > 0.5 * v_mask[0]
    assert v_plain[k] < 0.5 * v_plain[0]
    # the hooks are removed on exit
    with torch.no_grad(), capture(model) as again:
        model.model(input_ids=ids)
    assert torch.allclose(again["attn"][0], plain["attn"][0])


def test_variance_amplification_vs_rescale():
    model = build_model(TINY, 5)
    ids = torch.randint(0, 256, (32, 16), generator=torch.Generator().manual_seed(6))
    k = 6
    outs = {}
    for mode in ("variance", "rescale"):
        with torch.no_grad(), amplify_variance(model, 0, k, 4.0, mode), capture(model, attention=False) as rec:
            model.model(input_ids=ids)
        outs[mode] = rec["o_in"][0]
    with torch.no_grad(), capture(model, attention=False) as rec:
        model.model(input_ids=ids)
    base = rec["o_in"][0]
    mu = base.mean(dim=(0, 1))
    assert torch.allclose(outs["variance"][:, k], mu + 4.0 * (base[:, k] - mu), atol=1e-6)
    assert torch.allclose(outs["rescale"][:, k], 4.0 * base[:, k], atol=1e-6)
    assert torch.allclose(outs["variance"][:, k - 1], base[:, k - 1])


def test_seedprint_self_with_noise_is_linked_and_other_seed_is_not():
    a = build_model(TINY, 0)
    noisy = build_model(TINY, 0)
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        for p in noisy.parameters():
            p.add_(0.1 * p.std() * torch.randn(p.shape, generator=g))
    ids = probe_inputs(300, 16, 256, 42)
    fa, fn = features(a, ids), features(noisy, ids)
    v = seedprint_test(fa, fn, k=8)
    assert v.n_dims >= 1 and v.p < 0.01 and v.tau > 0.3
    assert linear_cka(fa, fa) == pytest.approx(1.0) and weight_cosine(a, noisy) > 0.9


def test_seedprint_null_p_values_look_uniform():
    null = empirical_null(n=200, d=32, k=16, trials=120, seed=0, mode="base")
    ps = [v.p for v in null]
    assert ks_uniform(ps) > 0.001  # loose level: the analytic null is only approximate
    assert np.mean(np.array(ps) < 0.01) < 0.06
    # a far-from-uniform set is rejected by the same check (the test can fail)
    assert ks_uniform([p / 10 for p in ps]) < 0.001


def test_scaled_suite_fails_fast_in_validate_naming_the_variable(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from bench.cli import main

    monkeypatch.delenv("LLM_INTERNALS_MODEL_DIR", raising=False)
    res = CliRunner().invoke(main, ["validate", "llm_internals_scaled"])
    assert res.exit_code == 2, res.output
    assert "LLM_INTERNALS_MODEL_DIR" in res.output and "methods[0] (local_model)" in res.output
    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setenv("LLM_INTERNALS_MODEL_DIR", str(tmp_path))
    res = CliRunner().invoke(main, ["validate", "llm_internals_scaled"])
    assert res.exit_code == 2 and "tokenizer.json" in res.output and "*.safetensors" in res.output, res.output
    (tmp_path / "tokenizer.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    res = CliRunner().invoke(main, ["validate", "llm_internals_scaled"])
    assert res.exit_code == 0, res.output


def test_tiny_suite_validates_and_hash_ignores_model_dir(monkeypatch, tmp_path):
    from bench.plan import resolve

    plan = resolve("llm_internals_tiny")
    assert {c.adapter for c in plan.cells} == {"llama_baseline", "headwise_rmsnorm", "seedprint_matrix"}
    # the two arms differ only by the head norm (same budget except lr, same arch)
    cells = {c.method: c for c in plan.cells if c.seed == 0}
    lo, hn = cells["llama_lr_lo"], cells["headnorm_lr_lo"]
    assert lo.budget == hn.budget and lo.params["arch"] == hn.params["arch"] and "head_norm" in hn.params
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        for f in ("config.json", "tokenizer.json", "model.safetensors"):
            (tmp_path / d / f).write_text("{}")
    hashes = set()
    for d in ("a", "b"):
        monkeypatch.setenv("LLM_INTERNALS_MODEL_DIR", str(tmp_path / d))
        hashes.add(next(c.config_hash for c in resolve("llm_internals_scaled").cells if c.method == "local_model"))
    assert len(hashes) == 1


@pytest.mark.slow
def test_micro_suite_end_to_end(tracking_uri, cache, results_dir):
    from bench import leaderboard
    from bench.runner import run_suite
    from bench.suite_file import load_suite
    from bench.tracking import Tracker

    from conftest import SUITES

    suite = load_suite(SUITES / "llm_internals_micro.yaml")
    outcomes, _ = run_suite(suite, tracking_uri=tracking_uri, cache=cache, progress=False)
    assert [o.status for o in outcomes] == ["finished"] * 3, [o.error for o in outcomes]
    tr = Tracker(tracking_uri)
    board = leaderboard.build(suite, tr)
    rows = {r.method: r for r in board.rows}
    for key in ("sink_rate", "var_ratio", "dom_ratio", "eff_rank", "val_loss", "steps_to_target", "mask_alpha_k"):
        assert rows["llama"].mean(key) is not None and rows["headnorm"].mean(key) is not None
    assert rows["seedprint"].mean("sp_auc") is not None and rows["seedprint"].mean("sink_rate") is None
    run = tr.client.get_run(rows["llama"].run_ids[0])
    arts = {a.path for a in tr.client.list_artifacts(run.info.run_id, "plots")}
    assert any("attention_" in a for a in arts) and any("loss_" in a for a in arts)
    curve = tr.client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in curve] == [1, 2, 3, 4]
    sp = tr.client.get_run(rows["seedprint"].run_ids[0])
    assert any("pvalue_matrix" in a.path for a in tr.client.list_artifacts(sp.info.run_id, "plots"))
    # the seedprint cell with seed 0 reuses the baseline cell's cached trained model of init seed 0
    figs = leaderboard.make_figures(board, results_dir)
    assert any(p.name == "loss_curves_all_arms.png" for p in figs)


def test_seedprint_single_identity_dim_is_not_degenerate():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((200, 8))
    a[:, 3] -= 5.0  # the one dimension with the lowest mean in both models
    b = a + 0.1 * rng.standard_normal(a.shape)
    v = seedprint_test(a, b, k=1)
    assert v.n_dims == 1 and v.tau > 0.8 and v.p < 0.01


def test_seedprint_is_not_applicable_to_a_local_checkpoint_row():
    # llm_internals_scaled runs seedprint on every row: the local checkpoint's row has a model, no matrix
    from types import SimpleNamespace

    from adapters.llm_internals.local_model import LocalPretrained
    from adapters.llm_internals.metric_seedprint import SeedPrint, SeedPrintParams
    from bench.errors import MetricError

    local = SimpleNamespace(model=torch.nn.Linear(2, 2), trained=LocalPretrained.trained)
    assert SeedPrint().compute(local, None, SeedPrintParams()) == {}
    with pytest.raises(MetricError, match="no model matrix"):
        SeedPrint().compute(SimpleNamespace(), None, SeedPrintParams())
