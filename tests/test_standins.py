"""scripts/make_standins.py: each stand-in is read by the harness's own loaders and checks (no suite run here)."""
import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner

from bench.cli import main

ROOT = Path(__file__).resolve().parents[1]
PAPER = ("imagenet256", "cifar10", "cifar10_diffusion", "peft_qwen3_8b", "llm_internals_scaled")


def _make_standins():
    spec = importlib.util.spec_from_file_location("make_standins", ROOT / "scripts" / "make_standins.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    out = tmp_path_factory.mktemp("standins")
    return out, _make_standins().make_all(out)


@pytest.mark.slow
def test_standins_load_through_the_harness_loaders(standins, monkeypatch):
    from adapters.llm_internals.params import model_dir
    from adapters.peft.base_models import Qwen3HFSpec, qwen3_8b_dir
    from bench.data.folders import CIFAR10, ImageNet, DatasetCorrupt
    from bench.metrics.adm_stats import reference_statistics

    out, env = standins
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    inet = ImageNet.load(SimpleNamespace(root=None, resolution=256, n_train=6, n_test=3))
    assert tuple(inet.train.images.shape) == (6, 3, 256, 256) and len(set(inet.train.labels.tolist())) > 1
    ref = reference_statistics(env["ADM_REF_BATCH"])
    assert ref.mu.shape == (2048,) and ref.sigma.shape == (2048, 2048)
    assert np.load(env["ADM_REF_BATCH"], allow_pickle=False)["arr_0"].shape[1:] == (256, 256, 3)
    cifar = CIFAR10.load(SimpleNamespace(root=None))
    assert tuple(cifar.train.images.shape) == (100, 3, 32, 32) and tuple(cifar.test.images.shape) == (20, 3, 32, 32)
    monkeypatch.delenv("CIFAR10_CHECKSUMS")  # the published md5s: a stand-in never passes them
    with pytest.raises(DatasetCorrupt, match="published python release"):
        CIFAR10.load(SimpleNamespace(root=None))
    assert json.loads((qwen3_8b_dir(Qwen3HFSpec()) / "config.json").read_text())["model_type"] == "qwen3"
    assert json.loads((model_dir(None) / "config.json").read_text())["model_type"] == "llama"


@pytest.mark.slow
def test_paper_suites_validate_on_standins_and_name_the_variable_without(standins, monkeypatch):
    out, env = standins
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for suite in [*PAPER, env["STANDIN_PEFT_SUITE"]]:
        r = CliRunner().invoke(main, ["validate", suite], prog_name="bench")
        assert r.exit_code == 0 and ": ok (" in r.output, (suite, r.output)
    for var, suite in (("CIFAR10_DIR", "cifar10_diffusion"),
                       ("LLM_INTERNALS_MODEL_DIR", "llm_internals_scaled")):  # the suites whose validate checks data
        monkeypatch.delenv(var)
        r = CliRunner().invoke(main, ["validate", suite], prog_name="bench")
        assert r.exit_code == 2 and var in r.output, (suite, r.output)
        monkeypatch.setenv(var, env[var])
