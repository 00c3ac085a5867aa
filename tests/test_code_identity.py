"""Code identity: the adapter's fingerprint in the run tags, the refusal to reuse a run made by other code,
subclasses' own tokenizer cache keys, and the shipped keys and initial weights left unchanged."""
from __future__ import annotations

import hashlib
import sys
import types

import pytest
import torch
from click.testing import CliRunner

from bench import code_identity, registry
from bench.cli import main
from bench.plan import resolve
from bench.tracking import TAG, Tracker

PLUGIN = '''
"""A throw-away plugin (tests only): vq with its own tokenizer training ({note})."""
from adapters.tokenizers.vq import VQAdapter
from bench.registry import register_adapter


@register_adapter("{name}")
class RetrainedVQ(VQAdapter):
    {reuses}
    def train_new_tokenizer(self, ctx, ds, budget):
        return super().train_new_tokenizer(ctx, ds, budget)
'''

SUITE = """\
name: {suite}
dataset: {{name: fmnist, n_train: 200, n_test: 100}}
seeds: [0]
methods:
  - {{name: mine, adapter: {adapter}, baseline: true,
     params: {{codebook_size: 8, tokenizer: {{length: 4, width: 32, depth: 1, heads: 2}}, prior: {{width: 32, layers: 1, heads: 2}}}}}}
budget: {{tokenizer_steps: 5, tokenizer_batch: 32, prior_steps: 5, prior_batch: 32}}
metrics:
  - {{name: ar_loss}}
"""


@pytest.fixture
def make_plugin(tmp_path, monkeypatch):
    """make(module, adapter, note=..., reuses=False) writes a plugin module under tmp_path (importable)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.load_all()
    before, made = dict(registry.ADAPTERS), []

    def make(module, adapter, note="v1", reuses=False):
        (tmp_path / f"{module}.py").write_text(PLUGIN.format(
            name=adapter, note=note, reuses="reuses_weights_of = VQAdapter" if reuses else ""))
        made.append(module)
        sys.modules.pop(module, None)
        registry.ADAPTERS.pop(adapter, None)
        __import__(module)
        return registry.ADAPTERS[adapter]

    yield make
    registry.ADAPTERS.clear(), registry.ADAPTERS.update(before)
    for m in made:
        sys.modules.pop(m, None)


def _fake_ds():
    return types.SimpleNamespace(train=types.SimpleNamespace(fingerprint=lambda: "fp"), num_classes=10, channels=1,
                                 resolution=28)


def _adapter(cls, params, seed=0, budget=None):
    a = cls(cls.Params.model_validate(params), seed)
    a.channels, a.resolution, a.device, a.num_classes = 1, 28, torch.device("cpu"), 10
    if budget is not None and hasattr(cls, "finetune_recipe"):
        a.ft = cls.Budget.model_validate(budget)
    return a


def _budget(cell):
    from adapters.tokenizers.params import TokenizerARBudget

    return TokenizerARBudget.model_validate({k: v for k, v in cell.budget.items()
                                             if k in TokenizerARBudget.model_fields})


def test_fingerprint_covers_the_class_its_modules_and_a_plugins_version(make_plugin, tmp_path):
    vq = code_identity.identity(registry.get(registry.ADAPTERS, "adapter", "vq"))
    assert vq.cls == "adapters.tokenizers.vq:VQAdapter" and vq.plugins == {}
    assert {"adapters.tokenizers.vq", "adapters.tokenizers.vq_tokenizer", "adapters.tokenizers.ar_prior"} <= set(vq.modules)
    vcq = code_identity.identity(registry.get(registry.ADAPTERS, "adapter", "vcq"))
    assert "adapters.tokenizers.vcq" in vcq.modules and vcq.fingerprint != vq.fingerprint
    one = code_identity.identity(make_plugin("genbench_ci_plug_a", "ci_plug_a", note="v1"))
    assert one.plugins == {"genbench_ci_plug_a": "not installed (on sys.path)"}
    tags = one.tags()
    assert tags[code_identity.FINGERPRINT_TAG] == one.fingerprint
    assert tags["bench.code.class"] == "genbench_ci_plug_a:RetrainedVQ"
    assert tags["bench.code.module.genbench_ci_plug_a"] == one.modules["genbench_ci_plug_a"][:16]
    two = code_identity.identity(make_plugin("genbench_ci_plug_a", "ci_plug_a", note="v2: a fix"))
    assert two.fingerprint != one.fingerprint
    assert code_identity.changed_modules(tags, two) == ["genbench_ci_plug_a"]
    assert code_identity.run_matches(tags, two) is False and code_identity.run_matches({}, two) is None


def test_a_subclass_gets_its_own_tokenizer_key_unless_it_declares_reuse(make_plugin):
    cell = next(c for c in resolve("ci").cells if c.method == "vq")
    vq_cls = registry.get(registry.ADAPTERS, "adapter", "vq")
    ds, b = _fake_ds(), _budget(cell)
    vq_key = _adapter(vq_cls, cell.params).tokenizer_key(ds, b)
    own = make_plugin("genbench_ci_plug_b", "ci_plug_b")
    assert own.weights_owner() is own and own.weights_class_key() == {"class": "genbench_ci_plug_b:RetrainedVQ"}
    assert _adapter(own, cell.params).tokenizer_key(ds, b) != vq_key
    shared = make_plugin("genbench_ci_plug_c", "ci_plug_c", reuses=True)
    assert shared.weights_owner() is vq_cls and _adapter(shared, cell.params).tokenizer_key(ds, b) == vq_key


# Cache keys and initial-weight hashes of shipped cells, computed before the quantiser became a
# component and before subclass keys: they must not move (cached weights, committed baselines).
SHIPPED = {  # (suite, method-seed): (tokenizer key, sha256[:16] of the initial state dict)
    ("ci", "vq-s0"): ("c2138db679eee4a8", "ad0179983d83e731"),
    ("ci", "vcq-s0"): ("107895b51e769ef6", "de1a3e76fee42be5"),
    ("fmnist", "prologue-s0"): ("225ab6a7c4d36bbe", "f485a191725881ff"),
    ("fmnist", "wartok-s0"): ("bd856f943849ad0a", "f485a191725881ff"),
    ("fmnist", "vq-bits72-s0"): ("5edf0b8582c1908e", "39b4fa14f201cae3"),
}


def test_shipped_tokenizer_keys_and_initial_weights_are_unchanged():
    ds = _fake_ds()
    cells = {(s, f"{c.method}-s{c.seed}"): c for s in ("ci", "fmnist") for c in resolve(s).cells}
    for where, (key, init) in SHIPPED.items():
        c = cells[where]
        a = _adapter(registry.get(registry.ADAPTERS, "adapter", c.adapter), c.params, c.seed, c.budget)
        assert a.tokenizer_key(ds, _budget(c)) == key, where
        sd, h = a.new_tokenizer().state_dict(), hashlib.sha256()
        for k in sorted(sd):
            h.update(k.encode()), h.update(sd[k].detach().cpu().numpy().tobytes())
        assert h.hexdigest()[:16] == init, where


def test_cached_weights_of_other_code_are_retrained(make_plugin, capsys):
    cls = make_plugin("genbench_ci_plug_d", "ci_plug_d", note="v1")
    entry = {"state": {}, code_identity.CACHE_FIELD: code_identity.identity(cls).fingerprint}
    assert not code_identity.stale_weights(entry, cls, "tokenizer k")
    assert not code_identity.stale_weights({"state": {}}, cls, "tokenizer k")  # written before fingerprints
    cls = make_plugin("genbench_ci_plug_d", "ci_plug_d", note="v2")
    assert code_identity.stale_weights(entry, cls, "tokenizer k")
    assert "cached tokenizer k was trained by other code" in capsys.readouterr().err


def _finished_run(tracker, suite, cell, code_tags):
    exp = tracker.experiment_id(suite)
    rid = tracker.start(exp, "old", {f"{TAG}kind": "cell", f"{TAG}suite": suite, f"{TAG}method": cell.method,
                                     f"{TAG}seed": cell.seed, f"{TAG}config_hash": cell.config_hash, **code_tags})
    tracker.end(rid, "FINISHED")
    return rid


def test_a_finished_run_of_edited_plugin_code_is_refused_then_accepted(make_plugin, tmp_path, tracking_uri,
                                                                        results_dir):
    cls = make_plugin("genbench_ci_plug_e", "ci_plug_e", note="v1")
    old = code_identity.identity(cls).tags()
    p = tmp_path / "codeid.yaml"
    p.write_text(SUITE.format(suite="codeid", adapter="ci_plug_e"))
    (cell,) = resolve(p, plugins=["genbench_ci_plug_e"]).cells
    tr = Tracker(tracking_uri)
    rid = _finished_run(tr, "codeid", cell, old)
    make_plugin("genbench_ci_plug_e", "ci_plug_e", note="v2: the fix")  # the researcher edits the plugin
    cli, args = CliRunner(), ["run", str(p), "--plugin", "genbench_ci_plug_e", "--tracking-uri", tracking_uri,
                              "--no-progress"]
    r = cli.invoke(main, args)
    assert r.exit_code == 2, r.output
    assert ("mine seed=0: code changed since this run" in r.output and "genbench_ci_plug_e:RetrainedVQ" in r.output
            and "--force" in r.output and "--accept-code-change" in r.output)
    assert len(tr.cell_runs(tr.experiment_id("codeid"), status=None)) == 1  # refused before any run was made
    r = cli.invoke(main, args + ["--accept-code-change"])
    assert r.exit_code == 0, r.output
    assert "its numbers are kept (--accept-code-change)" in r.output
    accepted = tr.client.get_run(rid).data.tags[code_identity.ACCEPTED_TAG]
    assert accepted == code_identity.identity(registry.ADAPTERS["ci_plug_e"]).fingerprint
    r = cli.invoke(main, args)  # accepted once: reused without the flag
    assert r.exit_code == 0 and "skipped" in r.output, r.output


def test_runs_without_a_fingerprint_are_reused_as_before(tmp_path, tracking_uri, results_dir):
    from bench.runner import check_code

    (cell,) = [c for c in resolve("ci").cells if c.method == "vq" and c.seed == 0]
    tr = Tracker(tracking_uri)
    _finished_run(tr, "ci", cell, {})
    check_code(tr, tr.experiment_id("ci"), [cell])  # no exception
    _finished_run(tr, "ci", cell, {code_identity.FINGERPRINT_TAG: "0" * 16})
    with pytest.raises(Exception, match="code changed since this run"):
        check_code(tr, tr.experiment_id("ci"), [cell])
