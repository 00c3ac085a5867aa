"""PEFT claims setup: every placement once, matched arms within 2 %, one cell per length, the card's cost
counted, the filler really lengthens the input, validation curves logged, the lexicon stream."""
from __future__ import annotations

import itertools
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from peft_helpers import PAIRS, FakeTask, tiny_base

SUITE = "peft_qwen3_tiny"


def test_every_placement_enumerated_exactly_once():
    from adapters.peft.placement_sweep import enumerate_placements

    got = enumerate_placements(8, 2)
    assert len(got) == len(set(got)) == math.comb(8, 2) == 28
    assert set(got) == set(itertools.combinations(range(8), 2))
    # too many to train: a seeded sample, distinct, containing the kept placements, reproducible
    sample = enumerate_placements(12, 4, limit=30, seed=3, keep=[(5, 1, 2, 0), (8, 9, 10, 11)])
    assert len(sample) == len(set(sample)) == 30
    assert (0, 1, 2, 5) in sample and (8, 9, 10, 11) in sample
    assert all(len(s) == 4 and list(s) == sorted(s) for s in sample)
    assert sample == enumerate_placements(12, 4, limit=30, seed=3, keep=[(0, 1, 2, 5), (8, 9, 10, 11)])
    assert sample != enumerate_placements(12, 4, limit=30, seed=4, keep=[(0, 1, 2, 5), (8, 9, 10, 11)])
    with pytest.raises(ValueError):
        enumerate_placements(4, 5)


def test_percentile_rank():
    from adapters.peft.placement_sweep import percentile_rank

    s = [0.1, 0.5, 0.3, 0.5]
    assert percentile_rank(s, 0) == 0.0
    assert percentile_rank(s, 2) == pytest.approx(100 / 3)
    assert percentile_rank(s, 1) == pytest.approx(100 * 2.5 / 3)  # one tie counts half


def _suite_base():
    """A random-init model of the tiny suite's base_model spec (parameter counts only)."""
    from transformers import Qwen3ForCausalLM

    from adapters.peft.base_models import LoadedBase
    from adapters.peft.qwen3_tiny import TinySpec, qwen3_config
    from bench.suite_file import load_suite

    suite = load_suite(SUITE)
    spec = TinySpec.model_validate(suite.base_model)
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(qwen3_config(spec, spec.vocab, 0))
    return suite, LoadedBase(model=model, tokenizer=None, name="t", key="t", device=torch.device("cpu"),
                             dtype=torch.float32)


def test_matched_lora_arm_within_2_percent_of_prefix_arms():
    from bench import registry

    registry.load_all()
    suite, base = _suite_base()
    counts = {}
    for m in suite.methods:
        if m.name in ("lora_attn_matched", "prefix_tuning", "prefix_tuning_plus", "lora_all"):
            cls = registry.get(registry.ADAPTERS, "adapter", m.adapter)
            counts[m.name] = cls(cls.Params.model_validate(m.params), 0).expected_params(base)
    prefix = [counts["prefix_tuning"], counts["prefix_tuning_plus"]]
    assert abs(prefix[0] - prefix[1]) / prefix[0] <= 0.02
    for n in prefix:
        assert abs(counts["lora_attn_matched"] - n) / n <= 0.02, counts
    assert counts["lora_all"] > counts["lora_attn_matched"]  # the all-modules arm is the unmatched one
    # a target no rank can hit within the tolerance is an error naming the field
    from adapters.peft.lora import LoRA
    from bench.errors import BenchError

    bad = LoRA(LoRA.Params(target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], match_params=10000), 0)
    with pytest.raises(BenchError, match="match_params"):
        bad.expected_params(base)


def test_length_sweep_one_cell_per_length():
    from bench.plan import resolve

    plan = resolve(SUITE, seeds=[0])
    for adapter in ("prefix_tuning", "prefix_tuning_plus"):
        cells = [c for c in plan.cells if c.adapter == adapter]
        size = {c.method: (c.params.get("num_virtual_tokens") or c.params.get("match_params")) for c in cells}
        main = size["prefix_tuning" if adapter == "prefix_tuning" else "prefix_tuning_plus"]
        lengths = [c.params["input_filler_tokens"] for c in cells if size[c.method] == main]
        assert sorted(lengths) == [0, 16, 64] and len(set(lengths)) == len(lengths)
        prefix_sizes = sorted(size[c.method] for c in cells if c.params["input_filler_tokens"] == 0)
        assert len(prefix_sizes) == len(set(prefix_sizes)) == 3
    # prefix-length sweep at matched parameters: PT+ arm has PT's count at each prefix length
    from bench import registry

    registry.load_all()
    _, base = _suite_base()
    by = {c.method: c for c in plan.cells}
    for pt, ptp in (("prefix_tuning_p8", "prefix_tuning_plus_p8"), ("prefix_tuning_p96", "prefix_tuning_plus_p96")):
        n = [registry.get(registry.ADAPTERS, "adapter", by[m].adapter)(
            registry.get(registry.ADAPTERS, "adapter", by[m].adapter).Params.model_validate(by[m].params), 0
        ).expected_params(base) for m in (pt, ptp)]
        assert n[0] == n[1], (pt, n)


def test_filler_lengthens_the_input_and_keeps_shapes():
    from adapters.peft.input_length import InputFiller, filler_ids

    base = tiny_base(layers=2)
    tok = base.tokenizer
    ids = filler_ids(tok, 11)
    assert len(ids) == 11
    x = torch.tensor([tok("Pair: cat dog", add_special_tokens=False)["input_ids"]])
    labels = x.clone()
    labels[:, :-1] = -100
    seen = []
    h = base.model.model.embed_tokens.register_forward_hook(lambda m, a, o: seen.append(a[0].shape[1]))
    ref = base.model(input_ids=torch.cat([torch.tensor([ids]), x], 1),
                     labels=torch.cat([torch.full((1, 11), -100), labels], 1))
    filler = InputFiller(base.model, ids)
    out = base.model(input_ids=x, attention_mask=torch.ones_like(x), labels=labels)
    out2 = base.model(x)  # positional, as lm-eval's HFLM calls it
    filler.remove()
    h.remove()
    assert seen == [x.shape[1] + 11] * 3
    assert out.logits.shape == out2.logits.shape == (1, x.shape[1], base.model.config.vocab_size)
    torch.testing.assert_close(out.logits, ref.logits[:, 11:])
    torch.testing.assert_close(out.loss, ref.loss)


class _Ctx(SimpleNamespace):
    def log_param(self, k, v):
        self.params_logged[k] = v

    def log_metric(self, k, v, step=None):
        self.metrics_logged.append((k, v, step))


def _ctx(tmp_path, budget):
    from bench.context import Cache

    task = FakeTask(PAIRS)
    return _Ctx(cache=Cache(root=tmp_path / "cache"), dataset=task, budget=budget, artifact_dir=tmp_path,
                progress=False, device=torch.device("cpu"), params_logged={}, metrics_logged=[]), task


BUDGET = {"steps": 4, "batch_size": 4, "lr": 1e-2, "warmup_steps": 0, "timing_warmup": 0, "eval_batch_size": 8,
          "val_every": 2, "val_examples": 8}


def test_card_probing_cost_is_added_to_its_cost_record(tmp_path):
    from adapters.peft.layer_card import LayerCardLoRA

    base = tiny_base(layers=3)
    ctx, task = _ctx(tmp_path, BUDGET)
    ad = LayerCardLoRA(LayerCardLoRA.Params(rank=2, placement="card", k=1, score="probe", probe_steps=2,
                                            calib_examples=4, probe_val_examples=8), 0)
    ad._ctx = ctx
    ad.before_finetune(base, ctx)
    r = ad.finetune(base, task, BUDGET, 0)
    card = ad.card.meta
    assert card["card_flops"] > 0 and card["total_s"] > 0
    assert r.extra["card_flops"] == card["card_flops"] and r.extra["card_s"] == card["total_s"]
    assert r.train_flops == pytest.approx(r.extra["finetune_flops"] + card["card_flops"])
    assert r.total_train_s == pytest.approx(r.extra["finetune_s"] + card["total_s"])
    # a fixed placement has no card and no card cost
    fixed = LayerCardLoRA(LayerCardLoRA.Params(rank=2, placement="top", k=1, probe_steps=0, score="resnorm"), 0)
    assert "card_flops" not in fixed.finetune(tiny_base(layers=3), task, BUDGET, 0).extra
    # every arm logs a validation curve (MLflow metric with steps) and its final losses
    curve = [(v, s) for k, v, s in ctx.metrics_logged if k == "val_loss"]
    assert [s for _, s in curve] == [1, 3] and r.extra["final_val_loss"] == curve[-1][0]
    assert math.isfinite(r.extra["final_train_loss"])


def test_placement_sweep_trains_each_placement_once(tmp_path):
    from adapters.peft.placement_sweep import LayerPlacements

    base = tiny_base(layers=4)
    ctx, task = _ctx(tmp_path, BUDGET)
    ad = LayerPlacements(LayerPlacements.Params(rank=2, placement="card", k=2, score="res_over_eact",
                                                probe_steps=0, calib_examples=4, sweep_steps=2), 0)
    trained = []
    ad.score = lambda model, task: (trained.append(tuple(ad.layers)), -float(sum(ad.layers)))[1]
    ad._ctx = ctx
    ad.before_finetune(base, ctx)
    pick = tuple(ad.layers)
    r = ad.finetune(base, task, BUDGET, 0)
    assert sorted(trained) == list(itertools.combinations(range(4), 2)) and trained[-1] == pick
    assert r.adapter_layers == list(pick) and r.extra["placement_n"] == 6
    accs = {t: -float(sum(t)) for t in trained}
    assert r.extra["placement_regret"] == pytest.approx(max(accs.values()) - accs[pick])
    assert 0 <= r.extra["placement_pct"] <= 100 and r.extra["placement_pct_bottom"] == 100.0
    assert (tmp_path / "placements.csv").read_text().count("\n") == 7
    # only the pick's LoRA is left on the base model
    from adapters.peft.adapter_base import lora_layers_present

    assert lora_layers_present(r.model) == list(pick)


def test_lexicon_stream_and_cache_identity():
    from adapters.peft.lexicon_stream import lexicon_text
    from adapters.peft.qwen3_tiny import EOS, TinySpec
    from adapters.peft.tasks import LEXICON

    a = lexicon_text(200, 0, EOS)
    assert a == lexicon_text(200, 0, EOS) and a != lexicon_text(200, 1, EOS)
    assert "Words:" not in a and "Topic:" not in a  # not the task prompts
    words = set(a.replace(",", " ").replace(".", " ").split())
    assert sum(w in words for t in LEXICON.values() for w in t) >= 60
    assert "pretrain_facts" not in TinySpec().identity()  # a corpus-only spec keeps its cache key
    assert TinySpec(pretrain_facts=0.5).identity()["pretrain_facts"] == 0.5


def test_length_curve_figure(tmp_path):
    from adapters.peft.length_plot import length_figures, sweep_points
    from bench.suite_file import load_suite

    suite = load_suite(SUITE)

    class Row(SimpleNamespace):
        def mean(self, k):
            return self.vals.get(k)

        def std(self, k):
            return 0.01

    rows = [Row(method=m.name, vals={"accuracy": 0.3 + 0.01 * i, "trainable_params": 1000 * (i + 1)})
            for i, m in enumerate(suite.methods)]
    board = SimpleNamespace(rows=rows, suite=suite)
    by_len, by_size = sweep_points(board)
    assert [x for x, _, _ in by_len[("prefix_tuning", 28)]] == [0, 16, 64]
    assert [x for x, _, _ in by_len[("prefix_tuning_plus", 28672)]] == [0, 16, 64]
    assert len(by_size["prefix_tuning"]) == len(by_size["prefix_tuning_plus"]) == 3
    (path,) = length_figures(board, tmp_path)
    assert path.stat().st_size > 1000


def test_cloze_accuracy_counts_topic_hits():
    from adapters.peft.lexicon_stream import cloze_accuracy
    from peft_helpers import tokenizer

    tok = tokenizer()
    animal = tok(" animal", add_special_tokens=False)["input_ids"][0]

    class AlwaysAnimal(torch.nn.Module):  # answers "animal" for every word: right for 16 of 64
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids):
            logits = torch.zeros(1, input_ids.shape[1], len(tok))
            logits[..., animal] = 1.0
            return SimpleNamespace(logits=logits)

    assert cloze_accuracy(AlwaysAnimal(), tok) == 0.25


def test_resolved_lora_params_revalidate():
    """A cell re-validates its resolved params (every field set): match_params must survive that."""
    from adapters.peft.params import LoraParams
    from bench.plan import resolve

    (cell,) = resolve(SUITE, methods=["lora_attn_matched"], seeds=[0]).cells
    p = LoraParams.model_validate(cell.params)
    assert p.match_params == 28672 and LoraParams.model_validate(p.model_dump()) == p


def test_concurrent_cells_pretrain_the_base_once(tmp_path, monkeypatch):
    """Two pool workers asking for the same base: one pre-trains, the other waits on the per-key lock
    and loads it (the 3-seed run of 2026-12-03 pre-trained the same base twice side by side)."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from adapters.peft import qwen3_tiny as q
    from bench import cache_tree
    from bench.context import Cache

    calls = []

    def fake_pretrain(spec, out_dir, log=None):
        calls.append(threading.get_ident())
        time.sleep(0.5)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.json").write_text("{}")
        return {"pretrain_s": 0.5, "final_loss": 1.0}

    monkeypatch.setattr(q, "pretrain", fake_pretrain)
    cache = Cache(tmp_path / "cache")
    with ThreadPoolExecutor(3) as ex:
        paths = list(ex.map(lambda _: q.ensure_qwen3_tiny(q.TinySpec(), cache, log=None), range(3)))
    assert len(calls) == 1, calls
    assert len(set(paths)) == 1 and cache_tree.verified(paths[0]) is not None


def test_base_that_does_not_know_the_facts_is_logged_and_warned():
    """facts_cloze_acc from pre-training reaches the run as a metric; at chance it warns (the
    1000-step base of 2026-12-03 scored 0.25 and every arm then sat near chance)."""
    import dataclasses
    import warnings

    from adapters.peft.adapter_base import check_elicitation
    from peft_helpers import tiny_base

    logged = {}
    base = tiny_base()
    assert check_elicitation(base, logged.__setitem__) is None and not logged
    with pytest.warns(UserWarning, match="does not know the task facts.*pretrain_steps"):
        assert check_elicitation(dataclasses.replace(base, pretrain={"facts_cloze_acc": 0.25}),
                                 logged.__setitem__) == 0.25
    assert logged == {"base_facts_cloze_acc": 0.25}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_elicitation(dataclasses.replace(base, pretrain={"facts_cloze_acc": 1.0}), logged.__setitem__) == 1.0
    assert logged["base_facts_cloze_acc"] == 1.0
