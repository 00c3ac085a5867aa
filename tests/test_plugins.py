"""External adapters and metrics: --plugin, a suite's plugins:, and the genbench.* entry points."""
import sys
import textwrap

import pytest
from click.testing import CliRunner

from bench import registry
from bench.cli import main
from bench.errors import BenchError, SuiteError
from bench.plan import CellSpec, resolve
from bench.suite_file import load_suite
from bench.tracking import Tracker

# A method as its difference from vq: half the codebook at the first position.
PLUGIN = '''
"""A throw-away external adapter package (tests only)."""
from adapters.tokenizers.vq import VQAdapter
from bench.registry import register_adapter


@register_adapter("{name}")
class HalfFirstVQ(VQAdapter):
    """vq, but position 1 may only use the first K/2 codes."""

    def schedule(self):
        k, length = self.params.codebook_size, self.params.tokenizer.length
        return [k // 2] + [k] * (length - 1)
'''

SUITE = """\
name: {suite}
dataset: {{name: fmnist, n_train: 200, n_test: 100}}
seeds: [0]
{plugins}
methods:
  - {{name: half, adapter: {adapter}, baseline: true,
     params: {{codebook_size: 8, tokenizer: {{length: 4, width: 32, depth: 1, heads: 2}}, prior: {{width: 32, layers: 1, heads: 2}}}}}}
budget: {{tokenizer_steps: 5, tokenizer_batch: 32, prior_steps: 5, prior_batch: 32}}
metrics:
  - {{name: ar_loss}}
  - {{name: entropy}}
"""


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """make(module, adapter) writes a plugin package under tmp_path (on sys.path); registries restored after."""
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.load_all()
    adapters, metrics, made = dict(registry.ADAPTERS), dict(registry.METRICS), []

    def make(module, adapter):
        (tmp_path / module).mkdir()
        (tmp_path / module / "__init__.py").write_text(PLUGIN.format(name=adapter))
        made.append(module)
        return module

    yield make
    registry.ADAPTERS.clear(), registry.ADAPTERS.update(adapters)
    registry.METRICS.clear(), registry.METRICS.update(metrics)
    for m in made:
        sys.modules.pop(m, None)


def _suite(tmp_path, adapter, plugins="", suite="plug"):
    p = tmp_path / f"{suite}.yaml"
    p.write_text(SUITE.format(suite=suite, adapter=adapter, plugins=plugins))
    return p


@pytest.mark.slow
def test_cli_plugin_adapter_validates_and_runs(tmp_path, plugin, tracking_uri, results_dir):
    mod = plugin("genbench_test_plugin_a", "halfvq_a")
    p = _suite(tmp_path, "halfvq_a")
    cli = CliRunner()
    r = cli.invoke(main, ["validate", str(p)])  # without the plugin: unknown, and the known names are listed
    assert r.exit_code == 2 and "methods[0].adapter: unknown adapter 'halfvq_a'; known: [" in r.output
    assert "'vq'" in r.output and "Traceback" not in r.output
    r = cli.invoke(main, ["validate", str(p), "--plugin", mod])
    assert r.exit_code == 0 and "ok (1 methods" in r.output, r.output
    r = cli.invoke(main, ["run", str(p), "--plugin", mod, "--tracking-uri", tracking_uri, "--no-progress"])
    assert r.exit_code == 0, r.output
    tr = Tracker(tracking_uri)
    (run,) = tr.cell_runs(tr.experiment_id("plug", create=False))
    assert run.data.params["adapter"] == "halfvq_a" and "ar_loss" in run.data.metrics
    # position 1 has K/2 = 4 codes: at most 2 bits of entropy there
    assert run.data.metrics["entropy_first_token"] <= 2.0 + 1e-9


@pytest.mark.slow
def test_suite_plugins_field_travels_in_the_cell_spec(tmp_path, plugin, tracking_uri, results_dir):
    mod = plugin("genbench_test_plugin_b", "halfvq_b")
    p = _suite(tmp_path, "halfvq_b", plugins=f"plugins: [{mod}]", suite="plugb")
    s = load_suite(p)
    assert s.plugins == [mod]
    (spec_path,) = resolve(s).write(tmp_path / "cells")
    spec = CellSpec.read(spec_path)
    assert spec.plugins == (mod,) and spec.adapter == "halfvq_b"
    # A fresh process would not have the module: forget it, run-cell must import it from the spec.
    sys.modules.pop(mod)
    registry.ADAPTERS.pop("halfvq_b")
    r = CliRunner().invoke(main, ["run-cell", str(spec_path), "--tracking-uri", tracking_uri, "--no-progress"])
    assert r.exit_code == 0 and "finished" in r.output, r.output
    assert mod in sys.modules and "halfvq_b" in registry.ADAPTERS


def test_plugin_that_cannot_be_imported_names_file_and_field(tmp_path):
    p = _suite(tmp_path, "halfvq_c", plugins="plugins: [genbench_no_such_module]")
    with pytest.raises(SuiteError) as e:
        load_suite(p)
    assert f"{p}: plugins[0]: cannot import plugin module 'genbench_no_such_module'" in str(e.value)
    r = CliRunner().invoke(main, ["validate", str(_suite(tmp_path, "vq", suite="x")), "--plugin", "genbench_nope"])
    assert r.exit_code == 2 and "--plugin genbench_nope: cannot import plugin module" in r.output


def _dist(tmp_path, name, entry_points):
    d = tmp_path / f"{name}-0.1.dist-info"
    d.mkdir()
    (d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (d / "entry_points.txt").write_text(textwrap.dedent(entry_points))


def test_entry_points_are_loaded_by_load_all(tmp_path, plugin, monkeypatch):
    mod = plugin("genbench_test_plugin_d", "halfvq_d")
    _dist(tmp_path, "genbench_test_dist", f"[genbench.adapters]\nhalfvq = {mod}\n")
    monkeypatch.setattr(registry, "_loaded", False)
    registry.load_all()
    assert registry.ADAPTERS["halfvq_d"].__module__ == mod
    p = _suite(tmp_path, "halfvq_d")
    assert [c.adapter for c in resolve(p).cells] == ["halfvq_d"]


def test_broken_entry_point_is_one_clear_error(tmp_path, plugin, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    _dist(tmp_path, "genbench_broken_dist", "[genbench.metrics]\nbad = genbench_missing_module_x\n")
    monkeypatch.setattr(registry, "_loaded", False)
    with pytest.raises(BenchError, match=r"entry point 'bad' = 'genbench_missing_module_x' \(group genbench.metrics, "
                                         r"package genbench_broken_dist\) cannot be loaded: ModuleNotFoundError"):
        registry.load_all()


def test_every_command_that_reads_a_suite_takes_plugin(tmp_path, plugin, tracking_uri, results_dir):
    """leaderboard, export, claims, history (and the gate commands) read a plugin method's store with --plugin;
    without it the unknown adapter says how a plugin provides it."""
    from bench.plan import config_hash
    from bench.tracking import TAG

    mod = plugin("genbench_test_plugin_f", "halfvq_f")
    p = _suite(tmp_path, "halfvq_f", suite="plugf")
    s = load_suite(p, plugins=[mod])
    tr = Tracker(tracking_uri)
    rid = tr.start(tr.experiment_id("plugf"), "half-s0", {
        f"{TAG}kind": "cell", f"{TAG}method": "half", f"{TAG}seed": 0, f"{TAG}git_sha": "c" * 40,
        f"{TAG}config_hash": config_hash(s, s.method("half"))})
    tr.log_metrics(rid, {"ar_loss": 1.25, "entropy_first_token": 1.5})
    tr.end(rid, "FINISHED")
    sys.modules.pop(mod), registry.ADAPTERS.pop("halfvq_f")  # as in a fresh process
    cli = CliRunner()
    r = cli.invoke(main, ["leaderboard", str(p), "--tracking-uri", tracking_uri])
    assert r.exit_code == 2 and "unknown adapter 'halfvq_f'" in r.output and "pass --plugin MODULE" in r.output
    for args, want in ((["leaderboard", "--wide"], "1.25"), (["export", "--format", "lm-eval", "--output",
                                                               str(tmp_path / "lm.json")], "written"),
                       (["claims"], "no claims"), (["history"], "1.25 [1]"),
                       (["compare", "--baseline", str(tmp_path / "none.json")], "no such baseline file")):
        r = cli.invoke(main, [args[0], str(p), *args[1:], "--plugin", mod, "--tracking-uri", tracking_uri])
        assert want in r.output and "unknown adapter" not in r.output, (args, r.output)
