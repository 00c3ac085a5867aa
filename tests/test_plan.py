"""The resolved plan: frozen, JSON cell specs; pinned config hashes; every error at once; shippable cells."""
import glob
import json
import textwrap

import pytest
from click.testing import CliRunner

from bench import registry
from bench.cli import main
from bench.errors import BenchError, SuiteError
from bench.plan import CellSpec, cell_config, config_hash, resolve
from bench.suite import REPO_ROOT
from bench.suite_file import load_suite
from bench.tracking import TAG, Tracker

from conftest import SUITES

# Computed with bench.runner.config_hash on commit d4be140, before bench/plan.py existed. The gate's
# baseline and every finished MLflow run are found by these hashes: they must never move by accident.
# ci moved on purpose when its suite became `precision: float64` (float32 hashes: vq 2a14c6f3d80925f4,
# vcq 39eced7a62368ae1; the other suites, float32 by default, kept theirs). fmnist's wartok moved on purpose
# (was 1af823e0946d5389) when wAR-Tok got `init: vq` (a fine-tune of vq's tokenizer), target small and its fine-tune budget.
PINNED = {
    "ci": {"vq": "94f3f7160213c5a7", "vcq": "d45de991e47471f9"},
    # fmnist: bits-matched, lambda=0 and random-prologue controls, recon metric (a new suite identity)
    # fmnist moved again on purpose when it shrank to fit make bench's 20 minutes (7x7 tokenizer patches,
    # tokenizer 400 / prior 300 steps; the 600-step hashes were vq a637e55a34660d6d, vcq 9656e7982f84cdc4).
    # wartok-lam0 moved on purpose when it got `control_diagnostics: false` (was 3d7034906f755b69; it now
    # skips its auxiliary ARs: the same tokenizer bit for bit).
    # And again (2026-12-02) for 20 minutes with 7 cells: tokenizer 300, priors 250, prologue 200, fine-tune 160
    # steps (the 400/300/250/200 hashes: vq 63c6a13ceac9d427, vcq 0039f8f6823e9207, prologue 95dc9a73d058048b).
    "fmnist": {"vq": "5e0ac56fa3180de6", "vcq": "fe576091bc61ef3d", "vq-bits72": "98170415ebfa092c",
               "wartok": "e06e920071a88716", "wartok-lam0": "9c8fb25065182e9d", "prologue": "334ad01a1c840bda",
               "prologue-random": "53fc0d6dfccb680f"},
    # peft_qwen3_tiny moved on purpose (the 8-layer elicitation-regime base, matched arms, sweeps;
    # the 4-layer hashes were lora_all f78489fb39ed128a, prefix_tuning 1fe1fdc16562380d; then pretrain_steps
    # 1000 -> 3000 on 2026-12-03, because 1000 steps left the facts unlearned).
    "peft_qwen3_tiny": {"lora_all": "7cc356db77259b8e", "lora_attn_matched": "126129a52c4dae46",
                        "prefix_tuning": "c7c7c47413824ab4", "prefix_tuning_plus": "ab444617bb613084",
                        "layer_card_k2": "7cb6bf0240bb2804", "layer_card_rank": "28b87b42a21ef866",
                        "prefix_tuning_in64": "9f7cb6758380d7ed",
                        "prefix_tuning_plus_in64": "9147c4e82de4bc66",
                        "layer_card_flops": "2a919ac8965c061f", "prefix_tuning_in16": "9ae66c6fc895cbd7",
                        "prefix_tuning_plus_in16": "4f1945d94e298089",
                        "prefix_tuning_p8": "832b5cf845639b09", "prefix_tuning_plus_p8": "1305fa13c6669d4c",
                        "prefix_tuning_p96": "d7b61f62eb86e212",
                        "prefix_tuning_plus_p96": "6875201a93dc3a91"},
    str(SUITES / "smoke.yaml"): {"vq": "c24d1f35584fd8b5", "vcq": "3dcc342dd4327a14"},
}


@pytest.mark.parametrize("suite", list(PINNED))
def test_config_hashes_are_pinned(suite):
    from bench.runner import config_hash as runner_config_hash  # the compatibility re-export

    plan = resolve(suite)
    got = {c.method: c.config_hash for c in plan.cells}
    assert got == PINNED[suite]
    s = plan.suite
    assert {m.name: runner_config_hash(s, m) for m in s.methods} == PINNED[suite]


def test_every_shipped_cell_round_trips(tmp_path, monkeypatch):
    """JSON round trip; resolved params re-validate to themselves; the spec's own config = cell_config."""
    batches = tmp_path / "cifar-10-batches-py"  # cifar10_diffusion checks its data exist (files only)
    batches.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (batches / name).touch()
    monkeypatch.setenv("CIFAR10_DIR", str(tmp_path))
    for path in sorted(glob.glob(str(REPO_ROOT / "suites" / "*.yaml"))) + [str(SUITES / "smoke.yaml")]:
        plan = resolve(path)
        for c in plan.cells:
            assert CellSpec.from_json(c.to_json()) == c
            assert c.config() == cell_config(plan.suite, plan.suite.method(c.method))
            cls = registry.ADAPTERS[c.adapter]
            assert cls.Params.model_validate(c.params).model_dump(mode="json") == c.params
            for m in c.metrics:
                assert registry.METRICS[m.name].Params.model_validate(m.params).model_dump(mode="json") == m.params
            view = c.suite_view()
            assert config_hash(view, view.methods[0]) == c.config_hash


def test_plan_selects_methods_and_seeds_and_specs_are_frozen():
    plan = resolve("ci", methods=["vcq"], seeds=[2, 0])
    assert [(c.method, c.seed) for c in plan.cells] == [("vcq", 2), ("vcq", 0)]
    c = plan.cells[0]
    assert c.suite == "ci" and c.suite_file == "suites/ci.yaml" and not c.baseline and c.adapter == "vcq"
    assert c.params["k_max"] == 16 and c.params["tokenizer"]["patch"] == 4  # defaults filled in
    assert c.budget["tokenizer_lr"] == 0.001 and [m.name for m in c.metrics][:2] == ["ar_loss", "probe"]
    with pytest.raises(Exception):
        c.seed = 5
    with pytest.raises(BenchError, match="has no method 'nope'"):
        resolve("ci", methods=["nope"])


def test_edited_or_malformed_spec_is_refused(tmp_path):
    c = resolve("ci", methods=["vq"], seeds=[0]).cells[0]
    doc = json.loads(c.to_json())
    doc["params"]["codebook_size"] = 32
    with pytest.raises(BenchError, match="x.json: config_hash .* does not match"):
        CellSpec.from_json(json.dumps(doc), "x.json")
    doc = json.loads(c.to_json())
    doc["sed"] = 1
    with pytest.raises(BenchError, match="x.json: sed: unknown key"):
        CellSpec.from_json(json.dumps(doc), "x.json")


THREE_ERRORS = """\
name: t
dataset: {name: fmnist}
methods:
  - {name: vq, adapter: vq, baseline: true, params: {codebook_sise: 16}}
  - {name: vcq, adapter: vcq}
metrics:
  - {name: ar_loss, params: {n: -3}}
  - {name: fidd}
"""


def test_validate_reports_every_error_with_file_and_field(tmp_path):
    p = tmp_path / "three.yaml"
    p.write_text(THREE_ERRORS)
    r = CliRunner().invoke(main, ["validate", str(p)])
    assert r.exit_code == 2 and "Traceback" not in r.output
    lines = [x for x in r.output.splitlines() if x.strip()]
    for field in ("methods[0].params.codebook_sise: unknown key", "metrics[0].params.n:",
                  "metrics[1].name: unknown metric 'fidd'"):
        assert any(str(p) in x and field in x for x in lines), (field, r.output)


def test_schema_errors_do_not_hide_registry_errors(tmp_path):
    """A schema error in one field (top-level key, a bad seed, a method's unknown key) and registry errors of the others."""
    p = tmp_path / "mixed.yaml"
    p.write_text(THREE_ERRORS.replace("dataset:", "seeds: [zero]\nbogus: 1\ndataset:")
                 .replace("{name: vcq, adapter: vcq}", "{name: vcq, adapter: vcq, labell: x}"))
    with pytest.raises(SuiteError) as e:
        load_suite(p)
    msg = str(e.value)
    for field in ("seeds[0]:", "bogus: unknown key", "methods[1].labell: unknown key",
                  "methods[0].params.codebook_sise: unknown key", "metrics[0].params.n:", "metrics[1].name:"):
        assert f"{p}: {field}" in msg, (field, msg)


@pytest.mark.slow
def test_plan_and_run_cell_give_the_same_metrics_as_run(tmp_path, tracking_uri, cache, results_dir):
    from bench.runner import run_suite

    suite = load_suite(SUITES / "smoke.yaml")
    outcomes, _ = run_suite(suite, methods=["vq"], tracking_uri=tracking_uri, cache=cache, progress=False)
    assert outcomes[0].status == "finished", outcomes[0].error

    cli = CliRunner()
    out = tmp_path / "cells"
    r = cli.invoke(main, ["plan", str(SUITES / "smoke.yaml"), "--output", str(out), "--method", "vq", "--seed", "0"])
    assert r.exit_code == 0, r.output
    spec = out / "vq-s0.json"
    assert r.output.split() == [str(spec)] and json.loads(spec.read_text())["config_hash"] == PINNED[str(SUITES / "smoke.yaml")]["vq"]
    other = f"sqlite:///{tmp_path / 'other.db'}"  # its own store, and the default cache (results_dir): retrains
    r = cli.invoke(main, ["run-cell", str(spec), "--tracking-uri", other, "--no-progress"])
    assert r.exit_code == 0 and "finished" in r.output, r.output

    def cell(uri):
        tr = Tracker(uri)
        (run,) = tr.cell_runs(tr.experiment_id("smoke", create=False))
        return run

    a, b = cell(tracking_uri), cell(other)
    assert a.data.tags[f"{TAG}config_hash"] == b.data.tags[f"{TAG}config_hash"]
    assert a.data.params == b.data.params
    keys = {k for k in a.data.metrics if not k.endswith("_seconds") and not k.startswith("time_")}  # wall times differ
    assert keys == {k for k in b.data.metrics if not k.endswith("_seconds") and not k.startswith("time_")} and "ar_loss" in keys
    for k in keys:
        assert b.data.metrics[k] == pytest.approx(a.data.metrics[k], rel=1e-6, abs=1e-9), k

    # A second run-cell skips the finished cell; --parent must name a run of the suite's experiment.
    r = cli.invoke(main, ["run-cell", str(spec), "--tracking-uri", other])
    assert r.exit_code == 0 and "skipped" in r.output
    r = cli.invoke(main, ["run-cell", str(spec), "--tracking-uri", other, "--parent", "nope"])
    assert r.exit_code == 2 and "parent run 'nope'" in r.output and "Traceback" not in r.output
