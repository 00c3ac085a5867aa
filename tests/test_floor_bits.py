"""Bits-matched uniform baselines (K with the total bits of a VCQ schedule) and the
real-vs-real floor of the Fréchet family (computed once, cached, shown as the leaderboard's floor row)."""
from __future__ import annotations

import math

import numpy as np
import pytest
from pydantic import ValidationError

from adapters.tokenizers.params import VQParams, bits_matched_k, codebook_schedule, total_bits


@pytest.mark.parametrize("kind,k", [("log-linear", 23), ("doubling", 76), ("linear", 87)])
def test_bits_matched_k_per_schedule(kind, k):
    sizes = codebook_schedule(kind, 2, 256, 16)
    bits = sum(math.log2(s) for s in sizes)  # independent: the definition, summed here
    assert total_bits(sizes) == pytest.approx(bits)
    assert bits_matched_k(sizes) == k
    # k is the best integer: no other uniform K is closer in total bits
    best = min(range(2, 257), key=lambda c: abs(16 * math.log2(c) - bits))
    assert k == best and abs(16 * math.log2(k) - bits) < 16 * math.log2(k / (k - 1))


def test_log_linear_2_to_256_is_72_bits_and_uniform_is_matched():
    sizes = codebook_schedule("log-linear", 2, 256, 16)
    assert sizes[0] == 2 and sizes[-1] == 256 and round(total_bits(sizes)) == 72
    assert bits_matched_k([16] * 8) == 16 and bits_matched_k([4, 64]) == 16  # exact powers of two


def test_vq_params_match_bits_sets_k_and_keeps_old_dumps():
    p = VQParams.model_validate({"match_bits_of": {"schedule": "doubling", "k_min": 2, "k_max": 256}})
    assert p.codebook_size == 76 and p.model_dump()["match_bits_of"]["schedule"] == "doubling"
    short = VQParams.model_validate({"match_bits_of": {}, "tokenizer": {"length": 8}})  # L enters the schedule
    assert short.codebook_size == bits_matched_k(codebook_schedule("log-linear", 2, 256, 8))
    assert "match_bits_of" not in VQParams().model_dump()  # unmatched vq: config hash unchanged
    with pytest.raises(ValidationError, match="contradicts match_bits_of"):
        VQParams.model_validate({"codebook_size": 256, "match_bits_of": {}})
    assert VQParams.model_validate({"codebook_size": 23, "match_bits_of": {}}).codebook_size == 23


def test_floor_is_computed_once_and_reused(monkeypatch, tmp_path):
    from types import SimpleNamespace

    import test_fd_fmnist as t

    from bench.adapter import AdapterParams
    from bench.context import Cache
    from bench.data.fmnist import fmnist_dir, load_split
    from bench.metrics import fd_fmnist, frechet
    from tiny_images import IdentityTokenizer

    d = fmnist_dir()
    fm = SimpleNamespace(dir=d, train=load_split(d, "train"), test=load_split(d, "test"))
    cache = Cache(tmp_path / "cache")
    calls = []
    real_fd = frechet.frechet_distance
    monkeypatch.setattr(frechet, "frechet_distance", lambda a, b: calls.append(len(a)) or real_fd(a, b))
    outs = []
    for i in range(2):  # two cells (fresh contexts), one cache
        ctx, _ = t.make_ctx(fm, cache, tmp_path / str(i), [("rfd_fmnist", {"n": 300}), ("gfd_fmnist", {"n": 300})])
        monkeypatch.setattr(frechet, "frechet_bootstrap_stderr", lambda *a: None)
        outs.append(fd_fmnist.ReconstructionFD().compute(IdentityTokenizer(AdapterParams(), 0), ctx,
                                                         fd_fmnist.FDParams(n=300)))
    assert len(calls) == 3  # cell 1: value + floor; cell 2: value only (floor from the cache)
    assert outs[0]["rfd_fmnist_floor"] == outs[1]["rfd_fmnist_floor"] > 0
    # gFD's floor is the same pair (train vs test) in the other role order: the same cache entry, not recomputed
    ctx, _ = t.make_ctx(fm, cache, tmp_path / "g", [("rfd_fmnist", {"n": 300}), ("gfd_fmnist", {"n": 300})])
    g = fd_fmnist.GenerationFD().compute(t.Sampler(ctx.dataset.train), ctx, fd_fmnist.FDParams(n=300))
    assert len(calls) == 4 and g["gfd_fmnist_floor"] == outs[0]["rfd_fmnist_floor"]  # 4 = gFD's own value
    # the floor is the distance between the n first test and n class-balanced train images
    ctx, _ = t.make_ctx(fm, cache, tmp_path / "x", [("rfd_fmnist", {"n": 300})])
    from bench import inputs

    p = inputs.provider(ctx)
    inst = fd_fmnist.DEFAULT_INSTRUMENT
    a = p.get(inputs.features(inst, inputs.real_train_balanced(300), 1000))
    b = p.get(inputs.features(inst, inputs.real_test(300), 1000))
    assert outs[0]["rfd_fmnist_floor"] == pytest.approx(real_fd(a, b), rel=1e-9)


def test_leaderboard_floor_row_has_no_delta_and_no_claims():
    from bench.leaderboard import FLOOR_METHOD, Leaderboard, Row, floor_row
    from bench.metrics.base import Column

    cols = {"gfd_fmnist": Column("gFD", higher_is_better=False), "ar_loss": Column("AR", higher_is_better=False)}
    vq = Row("vq", "vq", True, "h1", [0, 1], ["r1", "r2"], {"gfd_fmnist": [10.0, 12.0], "gfd_fmnist_floor": [1.5, 1.5],
                                                           "gfd_fmnist_floor_stderr": [0.1, 0.1], "ar_loss": [1.0, 1.1]})
    vcq = Row("vcq", "vcq", False, "h2", [0], ["r3"], {"gfd_fmnist": [8.0], "gfd_fmnist_floor": [1.5]})
    ref = floor_row([vq, vcq], cols)
    assert ref.method == FLOOR_METHOD and ref.reference
    assert ref.per_seed == {"gfd_fmnist": [1.5], "gfd_fmnist_stderr": [0.1]}  # no floor for AR loss
    board = Leaderboard(suite=SimpleNamespace(), columns=cols, rows=[vq, vcq, ref])
    assert board.delta(ref, "gfd_fmnist") is None and board.delta_ci(ref, "gfd_fmnist") is None
    assert board.to_floor(vcq, "gfd_fmnist") == pytest.approx(6.5) and board.to_floor(vq, "ar_loss") is None
    assert board.methods == [vq, vcq]
    assert floor_row([Row("a", "a", True, "h")], cols) is None


from types import SimpleNamespace  # noqa: E402


def test_every_frechet_floor_compares_two_different_real_sets():
    """The floor is the distance between two *independent* real sets: a metric whose real set is the
    test split (gfd_judge) must get train as the floor's other set, never FD(test, test) = 0."""
    from bench import inputs as inp
    from bench import registry
    from bench.metrics.frechet import FrechetMetric

    registry.load_all()
    seen = []
    for name, cls in registry.METRICS.items():
        if not (isinstance(cls, type) and issubclass(cls, FrechetMetric)):
            continue
        fields = cls.Params.model_fields
        params = cls.Params.model_validate({"n": 16} if "n" in fields and fields["n"].is_required() else {})
        floor = cls.floor_input(params)
        if floor is None:
            continue
        seen.append(name)
        assert floor != cls.real_input(params), name
        assert {floor.kind, cls.real_input(params).kind} == {inp.REAL_TEST, inp.REAL_TRAIN_BALANCED}, name
    assert {"gfd_judge", "gfd_fmnist", "rfd_fmnist"} <= set(seen)
    judge = registry.METRICS["gfd_judge"]
    assert judge.floor_input(judge.Params.model_validate({"n": 16})) == inp.real_train_balanced(16)
