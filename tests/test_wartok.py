"""wAR-Tok: lambda = 0 is the vq baseline bit for bit; the WGF update never backpropagates through an AR."""
from __future__ import annotations

import torch

from adapters.tokenizers.vq_tokenizer import TokenizerConfig, VQTokenizer
from adapters.tokenizers.vq import VQAdapter, VQParams
from adapters.tokenizers.wartok import WARTokAdapter, WARTokParams, WGFTrainer, wgf_loss
from adapters.tokenizers.ar_prior import ARPrior, PriorConfig
from bench.context import Cache, CellContext

from tiny_images import BUDGET, TINY, tiny_dataset  # noqa: E402


def make_ctx(tmp_path, ds, name: str, logged: dict | None = None) -> CellContext:
    art = tmp_path / f"art-{name}"
    art.mkdir(exist_ok=True)

    def log_metric(k, v, s=None):
        if logged is not None:
            logged.setdefault(k, []).append((s, v))

    return CellContext(suite=None, method=None, seed=0, budget=dict(BUDGET), dataset=ds,
                       cache=Cache(tmp_path / f"cache-{name}"), artifact_dir=art, log_metric=log_metric,
                       progress=False, device=torch.device("cpu"))


def run_adapter(cls, params: dict, tmp_path, name: str, ds, logged=None):
    torch.manual_seed(0)  # what the runner does before building the adapter
    a = cls(cls.Params.model_validate(params), seed=0)
    a.prepare(make_ctx(tmp_path, ds, name, logged))
    return a


def test_lambda_zero_is_the_vq_baseline_bit_for_bit(tmp_path):
    ds = tiny_dataset()
    vq = run_adapter(VQAdapter, TINY, tmp_path, "vq", ds)
    wt = run_adapter(WARTokAdapter, {**TINY, "lam": 0.0, "target": "small"}, tmp_path, "wartok", ds)
    # Same cache key semantics: with lambda = 0 wAR-Tok would reuse vq's cached tokenizer and prior.
    budget = VQAdapter.Budget.model_validate(BUDGET)
    assert wt.tokenizer_key(ds, budget) == vq.tokenizer_key(ds, budget)
    # Trained separately (two caches), the weights and tokens are identical, bit for bit.
    sv, sw = vq.tokenizer.state_dict(), wt.tokenizer.state_dict()
    assert sv.keys() == sw.keys()
    assert all(torch.equal(sv[k], sw[k]) for k in sv)
    pv, pw = vq.prior.state_dict(), wt.prior.state_dict()
    assert all(torch.equal(pv[k], pw[k]) for k in pv)
    assert torch.equal(vq.encode(ds.test.images), wt.encode(ds.test.images))
    assert torch.equal(vq.sample(8, torch.arange(8) % 4, None, 3), wt.sample(8, torch.arange(8) % 4, None, 3))
    # ... and lambda > 0 changes the tokenizer (the signal is not a no-op).
    w1 = run_adapter(WARTokAdapter, {**TINY, "lam": 1.0, "target": "small", "target_fit_steps": 4}, tmp_path,
                     "wartok1", ds)
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
    params = {**TINY, "lam": 0.5, "target": "small", "target_fit_steps": 4, "tvc_every": 5,
              "fresh_prior_checks": 1, "fresh_prior_steps": 4, "target_fit_images": 64}
    a = run_adapter(WARTokAdapter, params, tmp_path, "loop", ds, logged)
    warm = round(WARTokParams().warm_start_frac * BUDGET["tokenizer_steps"])
    assert checked == list(range(warm, BUDGET["tokenizer_steps"]))
    for k in ("wartok_tvc_kl", "wartok_tracker_ce", "wartok_target_ce", "wartok_fresh_prior_ce", "tokenizer_rec_loss"):
        assert k in logged, k
    assert (tmp_path / "art-loop" / "tvc.png").exists()
    assert logged["tokenizer_rec_loss"][0][0] == 0  # the step-wise reconstruction curve, same key as vq
    # Rerun from cache: the tokenizer is loaded and its TVC history is logged again.
    logged2: dict = {}
    b = WARTokAdapter(WARTokParams.model_validate(params), seed=0)
    ctx = make_ctx(tmp_path, ds, "loop", logged2)
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
        p = WARTokParams(lam=0.5, target=target, warm_start_frac=0.5, target_fit_steps=3, target_fit_images=64,
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
