"""wAR-Tok: init vq reuses vq's cached tokenizer; the lambda = 0 control is a reconstruction-only fine-tune
bit for bit (scratch: vq bit for bit); the WGF update never backpropagates through an AR."""
from __future__ import annotations

import copy

import pytest
import torch

from adapters.tokenizers.vq_tokenizer import TokenizerConfig, VQTokenizer
from adapters.tokenizers.vq import VQAdapter, VQParams
from adapters.tokenizers.wartok import WARTokAdapter, WARTokParams, WGFTrainer, wgf_loss
from adapters.tokenizers.ar_prior import ARPrior, PriorConfig
from bench.context import Cache, CellContext

from tiny_images import BUDGET, TINY, tiny_dataset  # noqa: E402


FT_STEPS = 10
SCRATCH = {"init": "scratch"}


def make_ctx(tmp_path, ds, name: str, logged: dict | None = None, params: dict | None = None,
             budget: dict | None = None, cache: str | None = None) -> CellContext:
    art = tmp_path / f"art-{name}"
    art.mkdir(exist_ok=True)

    def log_metric(k, v, s=None):
        if logged is not None:
            logged.setdefault(k, []).append((s, v))

    def log_param(k, v):
        if params is not None:
            assert params.get(k, v) == v, f"param {k} logged twice with different values"  # as MLflow refuses
            params[k] = v

    return CellContext(suite=None, method=None, seed=0, budget=dict(budget or BUDGET), dataset=ds,
                       cache=Cache(tmp_path / f"cache-{cache or name}"), artifact_dir=art, log_metric=log_metric,
                       log_param=log_param, progress=False, device=torch.device("cpu"))


def run_adapter(cls, params: dict, tmp_path, name: str, ds, logged=None, logged_params=None, cache=None):
    torch.manual_seed(0)  # what the runner does before building the adapter
    a = cls(cls.Params.model_validate(params), seed=0)
    budget = cls.Budget.model_validate({**BUDGET, "finetune_steps": FT_STEPS} if cls is WARTokAdapter else BUDGET)
    a.prepare(make_ctx(tmp_path, ds, name, logged, logged_params, budget.model_dump(), cache))
    return a


def test_scratch_lambda_zero_runs_the_loop_and_is_the_vq_baseline_bit_for_bit(tmp_path):
    ds = tiny_dataset()
    vq = run_adapter(VQAdapter, TINY, tmp_path, "vq", ds)
    logged: dict = {}
    wt = run_adapter(WARTokAdapter, {**TINY, **SCRATCH, "lam": 0.0, "target": "small", "target_fit_steps": 4,
                                     "tvc_every": 5}, tmp_path, "wartok", ds, logged)
    # The control runs the same loop (auxiliary ARs trained, TVC logged) under its own cache entry ...
    budget = VQAdapter.Budget.model_validate(BUDGET)
    assert wt.tokenizer_key(ds, budget) != vq.tokenizer_key(ds, budget)
    assert "wartok_tracker_ce" in logged and "wartok_tvc_kl" in logged
    # ... yet (its randomness forked, its term times 0) the weights and tokens are vq's, bit for bit.
    sv, sw = vq.tokenizer.state_dict(), wt.tokenizer.state_dict()
    assert sv.keys() == sw.keys()
    assert all(torch.equal(sv[k], sw[k]) for k in sv)
    pv, pw = vq.prior.state_dict(), wt.prior.state_dict()
    assert all(torch.equal(pv[k], pw[k]) for k in pv)
    assert torch.equal(vq.encode(ds.test.images), wt.encode(ds.test.images))
    assert torch.equal(vq.sample(8, torch.arange(8) % 4, None, 3), wt.sample(8, torch.arange(8) % 4, None, 3))
    # ... and lambda > 0 changes the tokenizer (the signal is not a no-op).
    w1 = run_adapter(WARTokAdapter, {**TINY, **SCRATCH, "lam": 1.0, "target": "small", "target_fit_steps": 4},
                     tmp_path, "wartok1", ds)
    assert w1.tokenizer_key(ds, budget) != vq.tokenizer_key(ds, budget)
    assert not torch.equal(w1.tokenizer.state_dict()["codebook"], sv["codebook"])


def _tiny_parts():
    torch.manual_seed(0)
    tok = VQTokenizer(TokenizerConfig(length=4, width=32, depth=1, heads=2), [16] * 4, 1, 28)
    cfg = PriorConfig(width=32, layers=1, heads=2)
    tracker, target = ARPrior(16, 4, 4, cfg), ARPrior(16, 4, 4, cfg)
    return tok, tracker, target


def test_wgf_loss_never_backpropagates_through_either_ar():
    tok, tracker, target = _tiny_parts()
    # Both ARs *could* receive gradients (requires_grad stays True): none may reach them anyway.
    assert all(p.requires_grad for p in list(tracker.parameters()) + list(target.parameters()))
    x = torch.rand(8, 1, 28, 28) * 2 - 1
    z = tok.encode_latents(x)
    _, codes, _ = tok.quantize(z)
    loss, delta = wgf_loss(tok, z, codes, tracker, target, tau=0.1)
    assert not delta.requires_grad and delta.grad_fn is None
    assert loss.requires_grad
    loss.backward()
    assert all(p.grad is None for p in tracker.parameters())
    assert all(p.grad is None for p in target.parameters())
    # The gradient reaches the encoder and the codebook (through the soft assignment) only.
    assert tok.codebook.grad is not None and tok.codebook.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tok.encoder.parameters())
    assert all(p.grad is None for p in tok.decoder.parameters())


def test_wgf_contrast_sign_moves_mass_towards_the_target():
    """delta_t(k) = log q_phi - log p_theta: a descent step lowers pi on codes q over-weights vs p."""
    tok, tracker, target = _tiny_parts()
    x = torch.rand(8, 1, 28, 28) * 2 - 1
    z = tok.encode_latents(x).detach().requires_grad_(True)
    _, codes, _ = tok.quantize(z)
    loss, delta = wgf_loss(tok, z, codes, tracker, target, tau=0.1)
    loss.backward()
    with torch.no_grad():
        pi0 = torch.softmax(tok.similarity(z) / 0.1, -1)
        pi1 = torch.softmax(tok.similarity(z - 1e-3 * z.grad) / 0.1, -1)
        # The surrogate decreases along the negative gradient: mass moves to lower-delta codes.
        assert (pi1 * delta).sum() < (pi0 * delta).sum()


def test_training_loop_keeps_ar_grads_out_and_logs_the_tvc_view(tmp_path, monkeypatch):
    ds = tiny_dataset()
    checked = []
    orig = WGFTrainer.__call__

    def spy(self, tok, x, z, codes, step):
        out = orig(self, tok, x, z, codes, step)
        if out is not None:
            ar_params = [p for m in (self.tracker, self.target) for p in m.parameters() if p.requires_grad]
            assert ar_params, "the 'small' target and the tracker are trainable: the check must bind"
            grads = torch.autograd.grad(out, ar_params, allow_unused=True, retain_graph=True)
            assert all(g is None for g in grads)  # the loss graph does not contain either AR
            assert all(p.grad is None for p in ar_params)  # nothing lingers into the tokenizer's backward
            checked.append(step)
        return out

    monkeypatch.setattr(WGFTrainer, "__call__", spy)
    logged: dict = {}
    params = {**TINY, **SCRATCH, "lam": 0.5, "target": "small", "target_fit_steps": 4, "tvc_every": 5,
              "fresh_prior_checks": 1, "fresh_prior_steps": 4, "target_fit_images": 64}
    a = run_adapter(WARTokAdapter, params, tmp_path, "loop", ds, logged)
    warm = round(WARTokParams(init="scratch").warm_frac * BUDGET["tokenizer_steps"])
    assert checked == list(range(warm, BUDGET["tokenizer_steps"]))
    for k in ("wartok_tvc_kl", "wartok_tracker_ce", "wartok_target_ce", "wartok_fresh_prior_ce", "tokenizer_rec_loss"):
        assert k in logged, k
    assert (tmp_path / "art-loop" / "plots" / "tvc.png").exists()
    assert logged["tokenizer_rec_loss"][0][0] == 0  # the step-wise reconstruction curve, same key as vq
    # Rerun from cache: the tokenizer is loaded and its TVC history is logged again.
    logged2: dict = {}
    b = WARTokAdapter(WARTokParams.model_validate(params), seed=0)
    ctx = make_ctx(tmp_path, ds, "loop", logged2, budget={**BUDGET, "finetune_steps": FT_STEPS})
    b.prepare(ctx)
    assert logged2["wartok_tvc_kl"] == logged["wartok_tvc_kl"]
    assert all(torch.equal(a.tokenizer.state_dict()[k], v) for k, v in b.tokenizer.state_dict().items())


def test_params_are_validated():
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        WARTokParams.model_validate({"lam": -1})
    with pytest.raises(ValidationError):
        WARTokParams.model_validate({"target": "nope"})
    assert VQParams.model_fields.keys() <= WARTokParams.model_fields.keys()


def test_target_variants_frozen_stays_fixed_ema_follows():
    from adapters.tokenizers.vq_tokenizer import train_tokenizer

    ds = tiny_dataset()
    outs = {}
    for target in ("frozen", "ema"):
        torch.manual_seed(0)
        tok = VQTokenizer(TokenizerConfig(length=4, width=32, depth=1, heads=2), [16] * 4, 1, 28)
        p = WARTokParams(init="scratch", lam=0.5, target=target, warm_start_frac=0.5, target_fit_steps=3,
                         target_fit_images=64,
                         aux_prior=PriorConfig(width=32, layers=1, heads=2), ema_decay=0.5)
        hook = WGFTrainer(p, ds.train.images, 4, 8, 32, 0)
        start = {}
        orig = hook.start_joint_phase

        def start_and_snapshot(t, orig=orig, start=start, hook=hook):
            orig(t)
            start.update({k: v.clone() for k, v in hook.target.state_dict().items()})

        hook.start_joint_phase = start_and_snapshot
        train_tokenizer(tok, ds.train.images, 8, 32, 1e-3, 0, show_progress=False, extra_loss=hook)
        changed = any(not torch.equal(v, start[k]) for k, v in hook.target.state_dict().items())
        outs[target] = changed
        assert all(q.grad is None for q in hook.tracker.parameters())
        assert all(q.grad is None for q in hook.target.parameters())
        assert hook.history["wartok_tvc_kl"][0] == (4, 0.0)  # tracker starts as a copy of the target
    assert outs == {"frozen": False, "ema": True}


def _count_training(monkeypatch):
    """Spy on every tokenizer training (vq's and wartok's module): the list of (what, steps) calls."""
    import adapters.tokenizers.vq as vq_mod
    import adapters.tokenizers.wartok as wt_mod

    calls = []
    for mod in (vq_mod, wt_mod):
        orig = mod.train_tokenizer

        def spy(tok, images, steps, *a, _orig=orig, **k):
            calls.append((a[3] if len(a) > 3 else k.get("what", "tokenizer"), steps))
            return _orig(tok, images, steps, *a, **k)

        monkeypatch.setattr(mod, "train_tokenizer", spy)
    return calls


def test_init_vq_loads_vqs_cache_entry_and_lambda_zero_is_a_reconstruction_only_finetune(tmp_path, monkeypatch):
    from adapters.tokenizers.vq_tokenizer import train_tokenizer

    ds = tiny_dataset()
    vq_params: dict = {}
    vq = run_adapter(VQAdapter, TINY, tmp_path, "vq", ds, logged_params=vq_params, cache="shared")
    assert "tokenizer_cached" not in vq_params  # vq trained it (and wrote the cache entry)
    calls = _count_training(monkeypatch)
    p0, logged = {}, {}
    w0 = run_adapter(WARTokAdapter, {**TINY, "lam": 0.0, "target_fit_steps": 4, "tvc_every": 2}, tmp_path, "w0", ds,
                     logged, p0, cache="shared")
    # The same cache entry vq wrote, loaded, not trained again: the only training is the fine-tune.
    assert p0["base_tokenizer_cache_key"] == vq_params["tokenizer_cache_key"]
    assert p0["base_tokenizer_cached"] is True
    assert calls == [("finetune", FT_STEPS)]
    assert p0["tokenizer_cache_key"] != vq_params["tokenizer_cache_key"]
    # The control runs the whole loop: the auxiliary ARs are trained, the TVC view logged.
    assert [s for s, _ in logged["wartok_tracker_ce"]] == list(range(0, FT_STEPS, 2))
    assert {"tokenizer_recon_mse", "base_tokenizer_recon_mse", "base_code_usage_perplexity",
            "code_usage_perplexity", "finetune_rec_loss"} <= logged.keys()
    # lambda = 0: exactly a reconstruction-only fine-tune of vq's tokenizer with the same seed (no hook).
    ref = copy.deepcopy(vq.tokenizer)
    train_tokenizer(ref, ds.train.images, FT_STEPS, BUDGET["tokenizer_batch"], 1e-3, 0, show_progress=False)
    s0, sr, sv = w0.tokenizer.state_dict(), ref.state_dict(), vq.tokenizer.state_dict()
    assert all(torch.equal(s0[k], sr[k]) for k in sr)
    assert not all(torch.equal(s0[k], sv[k]) for k in sv)  # the fine-tune did change the tokenizer
    # lambda > 0 starts from the same entry and differs only through the WGF term.
    p1: dict = {}
    w1 = run_adapter(WARTokAdapter, {**TINY, "lam": 1.0, "target_fit_steps": 4}, tmp_path, "w1", ds,
                     logged_params=p1, cache="shared")
    assert p1["base_tokenizer_cache_key"] == vq_params["tokenizer_cache_key"] and p1["base_tokenizer_cached"]
    assert not torch.equal(w1.tokenizer.state_dict()["codebook"], s0["codebook"])
    assert calls == [("finetune", FT_STEPS)] * 2


def test_init_vq_trains_the_start_through_vqs_code_path_once(tmp_path, monkeypatch):
    ds = tiny_dataset()
    calls = _count_training(monkeypatch)
    pw: dict = {}
    w = run_adapter(WARTokAdapter, {**TINY, "lam": 0.3, "target": "ema", "target_fit_steps": 4}, tmp_path, "w", ds,
                    logged_params=pw, cache="shared")
    assert calls == [("tokenizer", BUDGET["tokenizer_steps"]), ("finetune", FT_STEPS)]
    assert "base_tokenizer_cached" not in pw
    pv: dict = {}
    vq = run_adapter(VQAdapter, TINY, tmp_path, "vq", ds, logged_params=pv, cache="shared")
    assert pv["tokenizer_cache_key"] == pw["base_tokenizer_cache_key"] and pv["tokenizer_cached"] is True
    assert len(calls) == 2  # vq loaded the start wartok had trained
    # ... and that start is what vq trains itself (a separate cache, bit for bit).
    alone = run_adapter(VQAdapter, TINY, tmp_path, "alone", ds)
    assert all(torch.equal(v, alone.tokenizer.state_dict()[k]) for k, v in vq.tokenizer.state_dict().items())
    # A rerun of wartok loads its fine-tuned tokenizer (no training at all).
    pw2: dict = {}
    w2 = run_adapter(WARTokAdapter, {**TINY, "lam": 0.3, "target": "ema", "target_fit_steps": 4}, tmp_path, "w2", ds,
                     logged_params=pw2, cache="shared")
    assert len(calls) == 3 and pw2["tokenizer_cached"] is True
    assert all(torch.equal(v, w2.tokenizer.state_dict()[k]) for k, v in w.tokenizer.state_dict().items())


def test_finetune_budget_is_part_of_the_key_but_not_of_vqs():
    ds = tiny_dataset(n_train=32, n_test=8)
    keys = {}
    for steps in (10, 20):
        a = WARTokAdapter(WARTokParams.model_validate(TINY), seed=0)
        a.ft = WARTokAdapter.Budget.model_validate({**BUDGET, "finetune_steps": steps})
        b = VQAdapter.Budget.model_validate(BUDGET)
        keys[steps] = (a.tokenizer_key(ds, b), a.vq_start().tokenizer_key(ds, b))
    assert keys[10][0] != keys[20][0] and keys[10][1] == keys[20][1]
    assert keys[10][1] == VQAdapter(VQParams.model_validate(TINY), seed=0).tokenizer_key(ds, b)


def _fake_board(rows, params):
    from types import SimpleNamespace as NS

    from bench.leaderboard import Row

    out = []
    for name, per_seed in rows:
        r = Row(name, name, name == "vq", "h")
        r.seeds, r.run_ids, r.per_seed = [0], [f"run-{name}"], {k: [v] for k, v in per_seed.items()}
        out.append(r)
    client = NS(get_run=lambda rid: NS(data=NS(params=params.get(rid, {}))))
    return NS(rows=out, tracker=NS(client=client), suite=NS(name="toy"))


def test_frontier_uses_one_recon_source_and_gives_vq_its_start_value(tmp_path):
    from adapters.tokenizers.wartok_frontier import ar_loss_vs_recon, frontier_points

    params = {"run-vq": {"tokenizer_cache_key": "K"},
              "run-w": {"tokenizer_cache_key": "W", "base_tokenizer_cache_key": "K"},
              "run-other": {"tokenizer_cache_key": "Z"}}
    rows = [("vq", {"ar_loss": 2.0}),
            ("w", {"ar_loss": 1.5, "tokenizer_recon_mse": 0.03, "base_tokenizer_recon_mse": 0.02}),
            ("other", {"ar_loss": 1.0}),  # another tokenizer: no start value of its own, so no point
            ("no-ar", {"tokenizer_recon_mse": 0.01})]
    pts, source = frontier_points(_fake_board(rows, params))
    assert source == "tokenizer_recon_mse"
    assert {r.method: (xs, ys) for r, xs, ys in pts} == {"vq": ([0.02], [2.0]), "w": ([0.03], [1.5])}
    # One row with a recon metric is not enough to mix it in; every row with it switches the source.
    rows2 = [("vq", {"ar_loss": 2.0, "recon_mse": 0.5}), rows[1]]
    pts, source = frontier_points(_fake_board(rows2, params))
    assert source == "tokenizer_recon_mse" and [xs for _, xs, _ in pts] == [[0.02], [0.03]]
    rows3 = [rows2[0], ("w", {**rows[1][1], "recon_mse": 0.6})]
    pts, source = frontier_points(_fake_board(rows3, params))
    assert source == "recon_mse" and [xs for _, xs, _ in pts] == [[0.5], [0.6]]
    assert [p.name for p in ar_loss_vs_recon(_fake_board(rows3, params), tmp_path)] == ["wartok_frontier.png"]
    assert ar_loss_vs_recon(_fake_board([rows[3]], params), tmp_path / "none") == []


def test_warm_start_frac_is_refused_outside_init_scratch():
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="warm_start_frac applies to init: scratch only"):
        WARTokParams.model_validate({"warm_start_frac": 0.3})
    assert WARTokParams.model_validate({"init": "scratch", "warm_start_frac": 0.3}).warm_start_frac == 0.3
    assert WARTokParams().init == "vq" and WARTokParams().target == "small"


def test_lambda_zero_without_diagnostics_is_the_same_tokenizer_without_the_auxiliaries(tmp_path, monkeypatch):
    ds = tiny_dataset()
    run_adapter(VQAdapter, TINY, tmp_path, "vq", ds, cache="shared")
    logged_on, logged_off = {}, {}
    on = run_adapter(WARTokAdapter, {**TINY, "lam": 0.0, "target_fit_steps": 4, "tvc_every": 2}, tmp_path, "on", ds,
                     logged_on, cache="shared")
    fits = []
    monkeypatch.setattr(WGFTrainer, "start_joint_phase", lambda self, tok: fits.append(1))
    off = run_adapter(WARTokAdapter, {**TINY, "lam": 0.0, "target_fit_steps": 4, "tvc_every": 2,
                                      "control_diagnostics": False}, tmp_path, "off", ds, logged_off, cache="shared")
    assert fits == []  # no auxiliary AR was fitted
    assert "wartok_tracker_ce" in logged_on and "wartok_tracker_ce" not in logged_off
    s_on, s_off = on.tokenizer.state_dict(), off.tokenizer.state_dict()
    assert all(torch.equal(s_on[k], s_off[k]) for k in s_on)  # bit for bit
    budget = WARTokAdapter.Budget.model_validate({**BUDGET, "finetune_steps": FT_STEPS})
    assert on.tokenizer_key(ds, budget) != off.tokenizer_key(ds, budget)
    with pytest.raises(ValueError, match="control_diagnostics"):
        WARTokParams.model_validate({"lam": 0.1, "control_diagnostics": False})
