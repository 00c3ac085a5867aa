"""The training kit (bench/training.py): schedule values, update order, NaN stop, fit callbacks, sampler."""
from __future__ import annotations

import math

import pytest
import torch

from adapters.tokenizers.ar_prior import ARPrior, PriorConfig
from bench.training import (Schedule, TrainingDiverged, Update, epoch_minibatches, fit, minibatches,
                            sample_autoregressive)


# -- schedule -----------------------------------------------------------------------------------
def _old_ar_warmup_cosine(step, warmup, total, floor=0.05):  # the tokenizer / AR-prior / prologue formula
    if step < warmup:
        return (step + 1) / warmup
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * frac))


def _old_peft_linear(step, warmup, total):
    if step < warmup:
        return (step + 1) / (warmup + 1)
    frac = (step - warmup) / max(1, total - warmup)
    return max(0.1, 1.0 - 0.9 * frac)


def _old_qwen3_cosine(step, warm, total):
    if step < warm:
        return (step + 1) / warm
    frac = (step - warm) / max(1, total - warm)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac))


@pytest.mark.parametrize("total,warmup", [(20, 50), (24, 3), (300, 31), (1000, 100), (7, 0), (1, 1)])
def test_schedule_reproduces_the_three_former_implementations_exactly(total, warmup):
    cos05 = Schedule("cosine", total, warmup, floor=0.05)
    lin = Schedule("linear", total, warmup, floor=0.1, warmup_plus_one=True)
    cos10 = Schedule("cosine", total, max(1, warmup), floor=0.1)
    for s in range(total + 1):  # LambdaLR also evaluates step == total after the last update
        assert cos05.multiplier(s) == _old_ar_warmup_cosine(s, warmup, total)
        assert lin.multiplier(s) == _old_peft_linear(s, warmup, total)
        assert cos10.multiplier(s) == _old_qwen3_cosine(s, max(1, warmup), total)


def test_schedule_shapes_and_scheduler_lr():
    s = Schedule("cosine", 100, 10, floor=0.05)
    assert [s.multiplier(i) for i in (0, 4, 9)] == [0.1, 0.5, 1.0]
    assert s.multiplier(10) == 1.0 and s.multiplier(100) == pytest.approx(0.05) and s.multiplier(500) == s.multiplier(100)
    assert all(s.multiplier(i) >= s.multiplier(i + 1) for i in range(10, 120))
    assert Schedule("constant", 10, 2).multiplier(0) == 0.5 and Schedule("constant", 10).multiplier(9) == 1.0
    lin = Schedule("linear", 10, 0, floor=0.2)
    assert lin.multiplier(5) == pytest.approx(0.6) and lin.multiplier(10) == pytest.approx(0.2)
    # the scheduler sets base_lr * multiplier(step) for the step the optimiser takes next
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.3)
    sched = s.scheduler(opt)
    for i in range(30):
        assert opt.param_groups[0]["lr"] == 0.3 * s.multiplier(i)
        opt.step()
        sched.step()


def test_torch_cosine_is_torchs_cosine_annealing():
    p = torch.nn.Parameter(torch.zeros(1))
    o1, o2 = torch.optim.SGD([p], lr=0.1), torch.optim.SGD([p], lr=0.1)
    s1 = Schedule("torch_cosine", 17).scheduler(o1)
    s2 = torch.optim.lr_scheduler.CosineAnnealingLR(o2, T_max=17)
    for i in range(17):
        assert o1.param_groups[0]["lr"] == o2.param_groups[0]["lr"]
        assert o1.param_groups[0]["lr"] == pytest.approx(0.1 * Schedule("torch_cosine", 17).multiplier(i), abs=1e-12)
        o1.step(), o2.step(), s1.step(), s2.step()


def test_schedule_validation_names_the_field():
    with pytest.raises(ValueError, match="kind"):
        Schedule("step", 10)
    with pytest.raises(ValueError, match="floor"):
        Schedule("cosine", 10, floor=1.5)
    with pytest.raises(ValueError, match="torch_cosine"):
        Schedule("torch_cosine", 10, warmup=2)


# -- update and fit -----------------------------------------------------------------------------
def _data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(64, 5, generator=g), torch.randn(64, 1, generator=g)


def _model():
    torch.manual_seed(1)
    return torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))


def test_fit_is_bit_identical_to_the_hand_written_loop():
    x, y = _data()
    steps, sched = 40, Schedule("cosine", 40, 5, floor=0.05)

    ref = _model()
    opt = torch.optim.AdamW(ref.parameters(), lr=1e-2)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, sched.multiplier)
    for idx in minibatches(64, 16, steps, 3):
        loss = torch.nn.functional.mse_loss(ref(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.5)
        opt.step()
        lr_sched.step()

    m = _model()
    upd = Update(torch.optim.AdamW(m.parameters(), lr=1e-2), sched, 0.5, what="toy")
    res = fit(lambda s, idx: (lambda loss: (loss, {"loss": loss}))(torch.nn.functional.mse_loss(m(x[idx]), y[idx])),
              minibatches(64, 16, steps, 3), steps, "toy", upd, show_progress=False)
    for a, b in zip(ref.parameters(), m.parameters()):
        assert torch.equal(a, b)
    assert res.steps == steps and len(res.history["loss"]) == steps
    ema = res.history["loss"][0]
    for v in res.history["loss"][1:]:
        ema = 0.98 * ema + 0.02 * v
    assert res.ema["loss"] == ema and res.last["loss"] == res.history["loss"][-1]


def test_nan_loss_stops_before_the_update_and_names_what_and_step():
    x, y = _data()
    m = _model()
    upd = Update(torch.optim.SGD(m.parameters(), lr=0.1), clip=1.0, what="toy model")
    before = {}

    def step_fn(step, idx):
        loss = torch.nn.functional.mse_loss(m(x[idx]), y[idx])
        if step == 3:
            before.update({k: v.clone() for k, v in m.state_dict().items()})
            loss = loss * float("nan")
        return loss, {"loss": loss}

    with pytest.raises(TrainingDiverged, match=r"toy model: loss is nan at step 3"):
        fit(step_fn, minibatches(64, 16, 10, 0), 10, "toy", upd, show_progress=False)
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())  # no step on the NaN loss
    with pytest.raises(TrainingDiverged, match="at step 7"):
        Update(torch.optim.SGD(m.parameters(), lr=0.1), what="x").step(torch.tensor(float("inf")), 7)


def test_fit_logging_checkpoints_and_no_batch_past_steps():
    drawn, logged, ckpt = [], [], []

    def batches():
        for i in range(100):
            drawn.append(i)
            yield i

    res = fit(lambda s, b: (None, {"a": float(b), "b": torch.tensor(2.0 * b)}), batches(), 12, "toy",
              log=lambda k, v, s: logged.append((k, v, s)), log_prefix="toy_", log_every=5, log_last=True,
              show_progress=False, checkpoint=ckpt.append, checkpoint_every=4)
    assert drawn == list(range(12)) and res.steps == 12
    assert logged == [(f"toy_{k}", m * s, s) for s in (0, 5, 10, 11) for k, m in (("a", 1.0), ("b", 2.0))]
    assert ckpt == [3, 7, 11]
    with pytest.raises(ValueError, match="no update"):
        fit(lambda s, b: (torch.tensor(1.0), {}), range(3), 3, "toy", show_progress=False)


def test_epoch_minibatches_cover_each_epoch_with_a_short_tail():
    g = torch.Generator().manual_seed(0)
    out = list(epoch_minibatches(10, 4, 2, g))
    assert [len(b) for b in out] == [4, 4, 2, 4, 4, 2]
    assert sorted(torch.cat(out[:3]).tolist()) == list(range(10)) == sorted(torch.cat(out[3:]).tolist())


# -- sampler ------------------------------------------------------------------------------------
T, V = 6, 9
TABLE = torch.randn(T, V, generator=torch.Generator().manual_seed(4))


def _next_logits(seq, labels):  # position-dependent logits, depend on the previous token too
    t = seq.shape[1]
    prev = seq[:, -1:].float() if t else torch.zeros(len(labels), 1)
    return TABLE[t].expand(len(labels), V) + 0.3 * prev + 0.1 * labels[:, None].float()


def test_sampler_respects_allowed_masks_and_is_deterministic():
    allowed = torch.zeros(T, V, dtype=torch.bool)
    for t in range(T):
        allowed[t, t:t + 3] = True
    labels = torch.arange(40) % 3
    a = sample_autoregressive(_next_logits, labels, T, seed=5, temperature=2.0, allowed=allowed, batch_size=16)
    b = sample_autoregressive(_next_logits, labels, T, seed=5, temperature=2.0, allowed=allowed, batch_size=16)
    assert a.dtype == torch.long and a.shape == (40, T) and torch.equal(a, b)
    assert all(bool(allowed[t, a[:, t]].all()) for t in range(T))
    assert not torch.equal(a, sample_autoregressive(_next_logits, labels, T, 6, 2.0, allowed, batch_size=16))
    bad = allowed.clone()
    bad[2] = False
    with pytest.raises(ValueError, match="no allowed code"):
        sample_autoregressive(_next_logits, labels, T, 5, 1.0, bad)
    with pytest.raises(ValueError, match="temperatures"):
        sample_autoregressive(_next_logits, labels, T, 5, [1.0] * (T - 1))


def test_zero_temperature_is_argmax_and_per_position_temperatures():
    labels = torch.arange(8) % 2
    allowed = torch.ones(T, V, dtype=torch.bool)
    allowed[:, 0] = False
    greedy = sample_autoregressive(_next_logits, labels, T, seed=0, temperature=0.0, allowed=allowed)
    seq = torch.empty(8, 0, dtype=torch.long)
    for t in range(T):
        nxt = _next_logits(seq, labels).masked_fill(~allowed[t], float("-inf")).argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], 1)
    assert torch.equal(greedy, seq)
    # per position: temperature 0 on the first 2 positions pins them to the argmax, whatever the seed
    temps = torch.tensor([0.0, 0.0] + [3.0] * (T - 2))
    for seed in range(4):
        s = sample_autoregressive(_next_logits, labels, T, seed, temps, allowed)
        assert torch.equal(s[:, :2], greedy[:, :2])
    # a per-position list of one exactly representable value draws exactly as the scalar does
    assert torch.equal(sample_autoregressive(_next_logits, labels, T, 3, 0.5, allowed),
                       sample_autoregressive(_next_logits, labels, T, 3, torch.full((T,), 0.5), allowed))


def test_ar_prior_sample_uses_the_kit_and_keeps_its_mode():
    torch.manual_seed(0)
    allowed = torch.ones(4, 7, dtype=torch.bool)
    allowed[1, 3:] = False
    prior = ARPrior(7, 4, 3, PriorConfig(width=16, layers=1, heads=2), allowed)
    prior.train()
    labels = torch.arange(10) % 4  # 3 = the null class
    s = prior.sample(labels, temperature=0.7, seed=2, batch_size=4)
    assert prior.training and s.shape == (10, 4) and bool((s[:, 1] < 3).all())
    with torch.no_grad():
        prior.eval()
        ref = sample_autoregressive(prior.next_logits, labels, 4, 2, 0.7, prior.allowed, batch_size=4)
    assert torch.equal(s, ref)
    assert torch.equal(prior.sample(labels, torch.full((4,), 0.5), 1), prior.sample(labels, 0.5, 1))
