"""Prologue-Post: the decoder ignores the prologue, the visual path is vq's, the layout is consistent."""
from __future__ import annotations

import pytest
import torch

from adapters.tokenizers.prologue import PrologueAdapter, PrologueEncoder, PrologueParams, frozen_features
from adapters.tokenizers.vq import VQAdapter
from adapters.tokenizers.ar_prior import ARPrior
from bench.context import Cache, CellContext

from tiny_images import BUDGET, TINY, tiny_dataset  # noqa: E402


def make_ctx(tmp_path, ds, name: str) -> CellContext:
    art = tmp_path / f"art-{name}"
    art.mkdir(exist_ok=True)
    return CellContext(suite=None, method=None, seed=0, budget=dict(BUDGET), dataset=ds,
                       cache=Cache(tmp_path / f"cache-{name}"), artifact_dir=art, progress=False,
                       device=torch.device("cpu"))

PRO = {**TINY, "n_prologue": 3, "prologue_codebook_size": 8, "prologue_width": 32, "prologue_depth": 1,
       "prologue_heads": 2, "joint_prior": {"width": 32, "layers": 1, "heads": 2}}
PRO_BUDGET = {**BUDGET, "prologue_steps": 12, "prologue_batch": 32}


def run(cls, params, tmp_path, ds, name="shared", budget=None):
    torch.manual_seed(0)
    a = cls(cls.Params.model_validate(params), seed=0)
    ctx = make_ctx(tmp_path, ds, name)
    ctx.budget = dict(budget or BUDGET)
    params_logged = {}
    ctx.log_param = lambda k, v: params_logged.__setitem__(k, v)
    a.prepare(ctx)
    return a, params_logged


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prologue")
    ds = tiny_dataset()
    vq, _ = run(VQAdapter, TINY, tmp, ds)
    pro, logged = run(PrologueAdapter, PRO, tmp, ds, budget=PRO_BUDGET)
    return ds, vq, pro, logged


def test_decoder_output_does_not_depend_on_prologue_tokens(trained):
    ds, vq, pro, _ = trained
    tokens = pro.encode(ds.test.images[:16])
    assert tokens.shape == (16, 3 + 4)
    out = pro.decode(tokens)
    g = torch.Generator().manual_seed(5)
    for _ in range(3):
        other = tokens.clone()
        other[:, :3] = torch.randint(0, 8, (16, 3), generator=g)
        assert torch.equal(pro.decode(other), out)
    # ... while changing a visual token does change it.
    vis = tokens.clone()
    vis[:, 3] = (vis[:, 3] + 1) % 16
    assert not torch.equal(pro.decode(vis), out)


def test_visual_path_is_the_frozen_vq_tokenizer(trained):
    ds, vq, pro, logged = trained
    assert logged.get("tokenizer_cached") is True  # reused vq's cached tokenizer (same key)
    sv, sp = vq.tokenizer.state_dict(), pro.tokenizer.state_dict()
    assert all(torch.equal(sv[k], sp[k]) for k in sv)
    assert not any(p.requires_grad for p in pro.tokenizer.parameters())
    imgs = ds.test.images[:32]
    assert torch.equal(pro.encode(imgs)[:, 3:], vq.encode(imgs))
    assert torch.equal(pro.decode(pro.encode(imgs)), vq.decode(vq.encode(imgs)))  # reconstruction identical


def test_layout_and_capabilities(trained):
    ds, _, pro, _ = trained
    assert pro.codebook_sizes == [8] * 3 + [16] * 4
    tokens = pro.encode(ds.test.images[:10])
    assert (tokens < torch.tensor(pro.codebook_sizes)).all()
    seqs = pro.prior_sequences(tokens)
    assert seqs.shape == (10, 3 + 1 + 4)
    assert (seqs[:, :3] >= 16).all() and (seqs[:, :3] < 24).all() and (seqs[:, 3] == 24).all()
    assert torch.equal(pro.tokens_from_sequences(seqs), tokens)
    assert pro.prior.allowed.shape == (8, 16 + 8 + 1)
    nll = pro.prior_nll(ds.test.images[:10], ds.test.labels[:10])
    assert nll.shape == (10, 7) and torch.isfinite(nll).all()
    imgs = pro.sample(6, torch.arange(6) % 4, None, seed=1)
    assert imgs.shape == (6, 1, 28, 28) and imgs.dtype == torch.uint8
    pro.params = pro.params.model_copy(update={"prologue_temperature": 0.5})
    assert pro.sample(4, torch.arange(4) % 4, None, seed=1).shape == (4, 1, 28, 28)
    # probe features: code vectors of the first k tokens (prologue codebook first)
    assert pro.code_vectors(tokens[:, :5]).shape[:2] == (10, 5)


def test_prologue_is_trained_only_through_the_ar_ce(trained):
    """The prologue encoder's gradient comes from the joint AR's CE through o @ W_emb, and nowhere else."""
    ds, _, pro, _ = trained
    torch.manual_seed(0)
    penc = PrologueEncoder(32, 7 * 7 + 4, PrologueParams.model_validate(PRO), 8)
    feats = frozen_features(pro.tokenizer, ds.train.images[:8].float() / 127.5 - 1)
    o, idx = penc(feats)
    assert torch.equal(o.detach(), torch.nn.functional.one_hot(idx, 8).float())  # forward is exactly one-hot
    joint = ARPrior(25, 8, 4, PrologueParams.model_validate(PRO).joint_prior, pro.prior.allowed)
    joint.requires_grad_(False)
    w = joint.model.get_input_embeddings().weight
    null = torch.full((8,), joint.null_class)
    vis = pro.tokenizer.encode(ds.train.images[:8])
    ids = pro._input_ids(joint, idx, vis, null, torch.zeros(8, dtype=torch.bool))
    emb = joint.embed(ids)
    emb = torch.cat([emb[:, :1], o @ w[16:24], emb[:, 4:]], 1)
    target = torch.cat([idx + 16, torch.full((8, 1), 24), vis], 1)
    ce_p, ce_v = pro._segment_ce(joint, emb, target)
    (ce_p + ce_v).backward()
    assert penc.codebook.grad is not None and penc.codebook.grad.abs().sum() > 0
    assert all(p.grad is None for p in joint.parameters())
    # The "visual input dropout" replaces every visual *input* by EOS and keeps the targets.
    dropped = pro._input_ids(joint, idx, vis, null, torch.ones(8, dtype=torch.bool))
    assert (dropped[:, 1 + 3 + 1:] == 24).all() and torch.equal(dropped[:, :5], ids[:, :5])


def test_untrained_control_keeps_the_random_prologue(tmp_path):
    ds = tiny_dataset()
    params = {**PRO, "ce_weight_prologue": 0.0, "ce_weight_visual": 0.0}
    a, _ = run(PrologueAdapter, params, tmp_path, ds, budget=PRO_BUDGET)
    fresh = a.new_prologue_encoder()
    assert all(torch.equal(p, q) for p, q in zip(fresh.state_dict().values(), a.penc.state_dict().values()))


def test_train_prefix_tokens_are_exact_and_only_for_train_prefixes(trained):
    """encode(first n train images) returns prepare's tokens: equal to encoding afresh, for vq and prologue."""
    ds, vq, pro, _ = trained
    for a in (vq, pro):
        head = ds.train.head(40).images
        cached = a.train_prefix_tokens(head)
        assert cached is not None and cached.shape[0] == 40
        fresh = (a.tokenizer.encode(head) if a is vq else
                 torch.cat([a.encode_prologue(a.penc, head), a.tokenizer.encode(head)], 1))
        assert torch.equal(cached, fresh)
        assert torch.equal(a.encode(ds.train.images), a.train_tokens)
        # a copy, a later slice or test images are encoded, not looked up
        assert a.train_prefix_tokens(head.clone()) is None
        assert a.train_prefix_tokens(ds.train.images[5:20]) is None
        assert a.train_prefix_tokens(ds.test.images[:40]) is None
        orig = a.train_tokens[0, 0].item()  # the lookup is what encode returns
        a.train_tokens[0, 0] = 1 - orig if orig in (0, 1) else 0
        try:
            assert not torch.equal(a.encode(head)[0], fresh[0])
        finally:
            a.train_tokens[0, 0] = orig
