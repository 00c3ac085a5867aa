"""bench.rewards: each built-in reward exact on hand-made images, the registry, no gradient through a reward,
a reward backed by a local model file verified by sha256, and the shipped judges."""
import math

import pytest
import torch

from bench import instruments
from bench.adapter import Conditioning
from bench.rewards import (REWARDS, RewardError, get_reward, known_rewards, mean_ci95, register_reward, score,
                           verified_file)
from bench.rewards.builtin import IN_DOMAIN_JUDGE, OOD_JUDGE, component_counts, encoded_bytes


def _blank(n=1, value=0):
    return torch.full((n, 1, 28, 28), value, dtype=torch.uint8)


def test_jpeg_sizes_in_known_bands_and_reward_is_minus_kilobytes():
    noise = torch.randint(0, 256, (1, 1, 28, 28), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    imgs = torch.cat([_blank(1, 0), _blank(1, 128), noise])
    size = encoded_bytes(imgs, "JPEG", quality=95, optimize=False)
    # a flat 28x28 grey JPEG is headers + one DC per block (~340 bytes); white noise does not compress
    assert 300 <= size[0] <= 400 and 300 <= size[1] <= 400 and 1100 <= size[2] <= 1600, size
    r = score("jpeg", imgs)
    assert r.dtype == torch.float64 and torch.equal(r, -torch.tensor(size, dtype=torch.float64) / 1000)
    assert r[0] > r[2]  # the flat image is the more compressible
    low = score("jpeg", noise, params={"quality": 50})
    assert float(low) > float(r[2])  # lower quality, smaller file
    assert float(score("png", _blank())) > float(score("png", noise))


def test_components_exact_count_connectivity_and_target():
    x = _blank(3)
    x[0, 0, 2:6, 2:6] = 255  # one square
    x[1, 0, 2:6, 2:6] = 255  # square + bar + two diagonal pixels
    x[1, 0, 10:12, 10:20] = 200
    x[1, 0, 20, 20] = x[1, 0, 21, 21] = 255
    x[2, 0, 5, 5] = 100  # below the threshold 127: background
    assert component_counts(x).tolist() == [1, 4, 0]
    assert component_counts(x, connectivity=8).tolist() == [1, 3, 0]  # the diagonal pair joins
    assert score("components", x).tolist() == [1.0, 0.0, 0.0]  # default target 1
    per_image = Conditioning(extra={"target": torch.tensor([1, 4, 0])})
    assert score("components", x, per_image).tolist() == [1.0, 1.0, 1.0]
    assert score("components", x, Conditioning(extra={"target": 3}), {"connectivity": 8}).tolist() == [0.0, 1.0, 0.0]
    assert score("components", x, None, {"threshold": 99}).tolist() == [1.0, 0.0, 1.0]


class _FixtureNet(torch.nn.Module):
    """p(class 0) = mean pixel / 255 exactly (the other nine classes share the rest)."""

    def forward(self, images):
        v = images.double().mean((1, 2, 3)).div(255).clamp(1e-6, 1 - 1e-6)
        logits = torch.zeros((len(images), 10), dtype=torch.float64)
        logits[:, 0] = torch.log(9 * v / (1 - v))
        return logits


def test_judge_reward_on_a_fixture_judge(monkeypatch):
    from bench.rewards import judges

    fixture = judges.Judge(_FixtureNet())
    monkeypatch.setattr(judges, "load_judge", lambda instrument_id: fixture)
    imgs = torch.cat([_blank(1, 230), _blank(1, 179), _blank(1, 230)])  # p0 = 0.902, 0.702, 0.902
    labels = torch.tensor([0, 0, 3])
    assert score("judge", imgs, labels).tolist() == [1.0, 0.0, 0.0]  # threshold 0.8; class 3 has p = 0.011
    assert score("judge", imgs, labels, {"threshold": 0.7}).tolist() == [1.0, 1.0, 0.0]
    assert score("judge_ood", imgs, Conditioning(labels=labels)).tolist() == [1.0, 0.0, 0.0]
    with pytest.raises(RewardError, match="needs the requested classes"):
        score("judge", imgs, None)


def test_shipped_judges_verify_differ_from_the_fd_network_and_judge_real_images():
    from bench.data.fmnist import fmnist_dir, load_split
    from bench.metrics.fmnist_classifier import ARCH_VERSION
    from bench.rewards.judges import accuracy, load_judge

    test = load_split(fmnist_dir(None), "test").head(500)
    cards = [instruments.card(i, "fmnist-reward-judge") for i in (IN_DOMAIN_JUDGE, OOD_JUDGE)]
    assert len({c.provenance["arch"] for c in cards} | {ARCH_VERSION}) == 3  # three different networks
    assert cards[0].provenance["recipe"]["seed"] != cards[1].provenance["recipe"]["seed"]
    for c in cards:
        instruments.path(c.id)  # the sha256 verifies
        assert accuracy(load_judge(c.id), test) > 0.8
    rec = get_reward("judge").record()
    assert rec["instrument"] == IN_DOMAIN_JUDGE and rec["instrument_sha256"] == cards[0].sha256
    assert get_reward("judge").ood == ("judge_ood",)


def test_no_gradient_flows_through_a_reward():
    w = torch.zeros(1, requires_grad=True)
    x = torch.sigmoid(w + torch.randn(4, 1, 28, 28)) * 255  # a differentiable "generator output"
    with pytest.raises(ValueError, match="expected uint8"):
        score("jpeg", x)  # float images carrying a graph are refused
    r = score("jpeg", x.detach().round().to(torch.uint8))
    assert not r.requires_grad and r.grad_fn is None and not torch.is_inference(r)
    with pytest.raises(RuntimeError, match="does not require grad"):
        r.sum().backward()  # backpropagating through the reward fails: it has no graph
    with pytest.raises(RuntimeError):
        torch.autograd.grad(r.sum(), x)  # and no path back to the generator's output
    assert w.grad is None

    p = torch.ones(1, requires_grad=True)  # a reward computed with a trainable parameter

    def leaky(images, cond):
        return (images.double().mean((1, 2, 3)) / 255 * p).clamp(0, 1)
    leak = register_reward("test_leaky", leaky, range=(0, 1))
    try:
        r = score(leak, _blank(2, 51))
        assert r.tolist() == [0.2, 0.2] and r.grad_fn is None  # inference mode recorded no graph
        with pytest.raises(RuntimeError, match="does not require grad"):
            r.sum().backward()
        assert p.grad is None
    finally:
        REWARDS.pop("test_leaky")


def test_reward_gets_a_copy_and_results_are_checked():
    seen = {}

    def mutate(images, cond):
        seen["inference"] = torch.is_inference_mode_enabled()
        images.zero_()
        return [2.0] * len(images)
    r = register_reward("test_mutate", mutate, range=(0, 1))
    try:
        x = _blank(2, 9)
        with pytest.raises(RewardError, match="outside its range"):
            score(r, x)
        assert seen["inference"] and int(x.min()) == 9  # the caller's images are untouched
    finally:
        REWARDS.pop("test_mutate")
    r = register_reward("test_short", lambda images, cond: [0.5], range=(0, 1))
    try:
        with pytest.raises(RewardError, match=r"returned \(1,\) values for 2 images"):
            score(r, _blank(2))
    finally:
        REWARDS.pop("test_short")


def test_registry_errors_name_what_exists():
    with pytest.raises(RewardError, match="unknown reward 'nope'; registered: components, jpeg, judge"):
        get_reward("nope")
    assert {"judge", "judge_ood", "jpeg", "png", "components"} <= set(known_rewards())
    with pytest.raises(RewardError, match="registered twice"):
        register_reward("jpeg", lambda images, cond: [0.0] * len(images), range=(-1, 0))
    with pytest.raises(RewardError, match=r"params.quality: Input should be less than or equal to 95"):
        score("jpeg", _blank(), params={"quality": 100})
    with pytest.raises(RewardError, match="params.colour: Extra inputs are not permitted"):
        get_reward("jpeg").params({"colour": 1})
    with pytest.raises(RewardError, match="binary reward's range is"):
        register_reward("test_bad", lambda i, c: [0.0], range=(0, 2), binary=True)


def test_a_reward_backed_by_a_model_file_verified_by_sha256(tmp_path):
    from safetensors.torch import load_file, save_file

    from bench.context import sha256_file

    path = tmp_path / "brightness.safetensors"
    save_file({"w": torch.tensor([1.0 / 255])}, str(path))
    sha = sha256_file(path)

    def brightness(images, cond):
        w = load_file(str(verified_file(path, sha)))["w"]  # verified before it is loaded
        return (images.double().mean((1, 2, 3)) * w.double()).clamp(0, 1)
    r = register_reward("test_brightness", brightness, range=(0, 1), provenance={"file": str(path), "sha256": sha})
    try:
        assert score(r, torch.cat([_blank(1, 0), _blank(1, 255)])).tolist() == [0.0, 1.0]
        assert r.record()["sha256"] == sha
        path.write_bytes(path.read_bytes() + b" ")  # replaced on disk
        with pytest.raises(RewardError, match="has sha256 .* expected"):
            score(r, _blank())
    finally:
        REWARDS.pop("test_brightness")


def test_mean_ci95_wilson_and_t():
    m, se, lo, hi = mean_ci95([1.0] * 8 + [0.0] * 2, binary=True)
    assert m == 0.8 and math.isclose(se, math.sqrt(0.16 / 10)) and 0.44 < lo < 0.5 and 0.94 < hi < 0.97
    m, se, lo, hi = mean_ci95([1.0, 2.0, 3.0], binary=False)
    assert m == 2.0 and math.isclose(se, 1 / math.sqrt(3)) and math.isclose(hi - m, 4.302653 / math.sqrt(3), rel_tol=1e-5)


def test_judge_training_is_deterministic_and_refuses_an_existing_id(tmp_path):
    from bench.data.fmnist import fmnist_dir, load_split
    from bench.rewards.judges import JudgeRecipe, train_instrument

    root = fmnist_dir(None)
    train, test = load_split(root, "train"), load_split(root, "test").head(200)
    recipe = JudgeRecipe(seed=3, n_train=256, batch_size=64)
    cards = [instruments._read_card(train_instrument("j", "mlp", train, test, recipe, folder=tmp_path / d))
             for d in ("a", "b") if (tmp_path / d).mkdir() is None]
    assert cards[0].sha256 == cards[1].sha256 and cards[0].provenance["recipe"]["seed"] == 3
    with pytest.raises(instruments.InstrumentError, match="exists"):
        train_instrument("j", "mlp", train, test, recipe, folder=tmp_path / "a")
