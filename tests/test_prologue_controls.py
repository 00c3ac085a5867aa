"""Prologue controls: the 2D raster tokenizer, the random-prologue control, the unconditional
final AR, code-usage logging, and default-valued new fields leaving config hashes alone."""
from __future__ import annotations

import pytest
import torch

from adapters.tokenizers import vq as vq_mod
from adapters.tokenizers.params import PrologueParams, TokenizerConfig, VQParams
from adapters.tokenizers.prologue import PrologueAdapter
from adapters.tokenizers.raster_tokenizer import RasterVQTokenizer, make_tokenizer
from adapters.tokenizers.vq import VQAdapter
from adapters.tokenizers.vq_tokenizer import VQTokenizer
from bench.context import Cache, CellContext

from tiny_images import BUDGET, TINY, tiny_dataset  # noqa: E402

PRO = {**TINY, "n_prologue": 3, "prologue_codebook_size": 8, "prologue_width": 32, "prologue_depth": 1,
       "prologue_heads": 2, "joint_prior": {"width": 32, "layers": 1, "heads": 2}}
PRO_BUDGET = {**BUDGET, "prologue_steps": 12, "prologue_batch": 32}
RASTER = {"kind": "raster2d", "length": 16, "patch": 7, "width": 32, "depth": 1, "heads": 2}


def run(cls, params, tmp_path, ds, budget=None, name="c"):
    torch.manual_seed(0)
    a = cls(cls.Params.model_validate(params), seed=0)
    art = tmp_path / f"art-{name}"
    art.mkdir(exist_ok=True)
    ctx = CellContext(suite=None, method=None, seed=0, budget=dict(budget or BUDGET), dataset=ds,
                      cache=Cache(tmp_path / f"cache-{name}"), artifact_dir=art, progress=False,
                      device=torch.device("cpu"))
    metrics = []
    ctx.log_param = lambda k, v: None
    ctx.log_metric = lambda k, v, step=None: metrics.append((k, v, step))
    a.prepare(ctx)
    return a, metrics


# -- the 2D raster tokenizer ---------------------------------------------------------------------
def test_raster_token_depends_only_on_its_patch():
    torch.manual_seed(0)
    tok = make_tokenizer(TokenizerConfig(**RASTER), [16] * 16, 1, 28)
    assert isinstance(tok, RasterVQTokenizer)
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    z = tok.encode_latents(x)
    assert z.shape == (4, 16, 8)
    for t in (0, 5, 15):
        row, col = divmod(t, 4)
        y = x.clone()
        y[:, :, 7 * row:7 * row + 7, 7 * col:7 * col + 7] = torch.rand(4, 1, 7, 7) * 2 - 1
        changed = (tok.encode_latents(y) - z).abs().amax(dim=(0, 2)) > 1e-6
        assert changed.tolist() == [i == t for i in range(16)]  # only token t moves, in raster order
    rec, idx, loss = tok(x)
    assert rec.shape == x.shape and idx.shape == (4, 16) and torch.isfinite(loss)


def test_query1d_tokenizer_mixes_patches_and_raster_length_is_checked():
    torch.manual_seed(0)
    tok = make_tokenizer(TokenizerConfig(length=4, width=32, depth=1, heads=2), [16] * 4, 1, 28)
    assert type(tok) is VQTokenizer
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    y = x.clone()
    y[:, :, :4, :4] = 1.0  # one patch: every query token sees it
    assert ((tok.encode_latents(y) - tok.encode_latents(x)).abs().amax(dim=(0, 2)) > 1e-6).all()
    with pytest.raises(ValueError, match="set tokenizer.length: 16"):
        make_tokenizer(TokenizerConfig(**{**RASTER, "length": 4}), [16] * 4, 1, 28)


def test_prologue_freezes_a_raster_tokenizer(tmp_path):
    ds = tiny_dataset()
    params = {**PRO, "tokenizer": RASTER}
    a, _ = run(PrologueAdapter, params, tmp_path, ds, PRO_BUDGET)
    assert isinstance(a.tokenizer, RasterVQTokenizer)
    assert a.penc.pos.shape[1] == 16 + 3  # reads the L per-patch features + P queries
    tokens = a.encode(ds.test.images[:8])
    assert tokens.shape == (8, 3 + 16)
    assert a.decode(tokens).shape == (8, 1, 28, 28)


# -- the random-prologue control -----------------------------------------------------------------
def test_random_control_prologue_encoder_gets_no_gradient(tmp_path):
    ds = tiny_dataset()
    a, metrics = run(PrologueAdapter, {**PRO, "prologue_signal": "random"}, tmp_path, ds, PRO_BUDGET)
    fresh = a.new_prologue_encoder()
    assert all(torch.equal(p, q) for p, q in zip(fresh.state_dict().values(), a.penc.state_dict().values()))
    assert all(p.grad is None for p in a.penc.parameters())
    # prologue tokens are still computed and the final AR is trained on [class, prologue, EOS, visual]
    assert a.train_tokens.shape == (len(ds.train), 3 + 4)
    assert a.prior.length == 3 + 1 + 4
    names = {k for k, _, _ in metrics}
    assert {"prologue_code_usage_perplexity", "prologue_codes_used", "prologue_usage_codes"} <= names
    # ... while the CE-trained encoder does move away from the same init (the control can differ).
    b, metrics_b = run(PrologueAdapter, PRO, tmp_path, ds, PRO_BUDGET, name="ce")
    assert not all(torch.equal(p, q) for p, q in zip(fresh.state_dict().values(), b.penc.state_dict().values()))
    steps = [s for k, _, s in metrics_b if k == "prologue_usage_perplexity"]
    assert steps == [0, 12]  # during (every USAGE_EVERY steps) and after training
    codes = [v for k, v, _ in metrics_b if k == "prologue_usage_codes"]
    assert all(1 <= c <= 8 for c in codes)


# -- the unconditional final AR ------------------------------------------------------------------
def test_unconditional_final_ar_trains_on_the_null_class_only(tmp_path, monkeypatch):
    ds = tiny_dataset()
    seen = []
    real = vq_mod.train_prior

    def spy(prior, tokens, labels, *args, **kwargs):
        seen.append(labels.clone())
        return real(prior, tokens, labels, *args, **kwargs)

    monkeypatch.setattr(vq_mod, "train_prior", spy)
    a, _ = run(PrologueAdapter, {**PRO, "final_ar_conditional": False}, tmp_path, ds, PRO_BUDGET)
    assert len(seen) == 1 and (seen[0] == a.prior.null_class).all()
    imgs, labels = ds.test.images[:8], ds.test.labels[:8]
    assert torch.equal(a.prior_nll(imgs, labels), a.prior_nll(imgs, (labels + 1) % 4))
    assert torch.equal(a.sample(4, torch.zeros(4, dtype=torch.long), None, seed=3),
                       a.sample(4, torch.full((4,), 3), None, seed=3))
    # the conditional default does pass the labels through
    seen.clear()
    b, _ = run(VQAdapter, TINY, tmp_path, ds, name="cond")
    assert torch.equal(seen[0], ds.train.labels)
    assert not torch.equal(b.prior_nll(imgs, labels), b.prior_nll(imgs, (labels + 1) % 4))


# -- hashes ---------------------------------------------------------------------------------------
def test_default_valued_new_fields_are_not_dumped():
    for model, field in ((TokenizerConfig, "kind"), (VQParams, "final_ar_conditional"),
                         (PrologueParams, "prologue_signal"), (PrologueParams, "final_ar_conditional")):
        assert field not in model().model_dump(mode="json")
    d = PrologueParams(prologue_signal="random", final_ar_conditional=False,
                       tokenizer={"kind": "raster2d"}).model_dump(mode="json")
    assert d["prologue_signal"] == "random" and d["final_ar_conditional"] is False
    assert d["tokenizer"]["kind"] == "raster2d"
    assert PrologueParams.model_validate(d).model_dump(mode="json") == d
    assert "prologue_signal" not in PrologueParams().model_dump(mode="json", include={"prologue_signal"})


def test_code_usage_metric_matches_scipy():
    import numpy as np
    from scipy.stats import entropy

    from bench.metrics.code_usage import usage

    z = np.array([[0, 1, 1, 3], [3, 3, 3, 0]])
    ppl, n = usage(z)
    assert n == 3 and ppl == pytest.approx(np.exp(entropy([2, 2, 4])))
    assert usage(np.zeros((5, 4), dtype=int)) == (1.0, 1)  # a collapsed prologue: perplexity 1
    with pytest.raises(ValueError):
        usage(np.array([[-1, 0]]))
