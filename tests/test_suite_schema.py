"""Suite validation: every error names the file and the field path; registry and capability checks."""
import textwrap

import pytest
from click.testing import CliRunner

from bench.cli import main
from bench.errors import SuiteError
from bench.suite_file import load_suite

GOOD = """
name: t
dataset: {name: fmnist}
methods:
  - {name: vq, adapter: vq, baseline: true}
  - {name: vcq, adapter: vcq, params: {k_min: 2, k_max: 64}}
metrics:
  - {name: ar_loss}
"""


def write(tmp_path, text, name="s.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_good_suite_loads(tmp_path):
    s = load_suite(write(tmp_path, GOOD))
    assert [m.name for m in s.methods] == ["vq", "vcq"]
    assert s.baseline_method().name == "vq"


@pytest.mark.parametrize("bad, expected", [
    (GOOD.replace("k_min: 2, k_max: 64", "k_min: 8, k_max: 4"), "methods[1].params.k_max: must be >= k_min"),
    (GOOD.replace("k_max: 64", "k_max: 64, kmax: 3"), "methods[1].params.kmax: unknown key"),
    (GOOD.replace("dataset: {name: fmnist}", "dataset: {name: fmnist}\nbogus: 1"), "bogus: unknown key"),
    (GOOD.replace("adapter: vcq", "adapter: nope"), "methods[1].adapter: unknown adapter 'nope'"),
    (GOOD.replace("{name: ar_loss}", "{name: ar_loss, params: {n: -3}}"), "metrics[0].params.n:"),
    (GOOD.replace("{name: ar_loss}", "{name: fidd}"), "metrics[0].name: unknown metric 'fidd'"),
    (GOOD.replace("name: vcq,", "name: vq,"), "duplicate method name"),
    (GOOD.replace("fmnist}", "fmnist}\nbudget: {prior_steps: -1}"), "budget.prior_steps"),
    (GOOD.replace("methods:\n", "methods: 3\n", 1).split("  - {name: vq")[0] + "metrics: []\n", "methods:"),
    ("- just a list", "must be a YAML mapping"),
    ("name: [unclosed", "not valid YAML"),
])
def test_errors_name_file_and_field(tmp_path, bad, expected):
    p = write(tmp_path, bad)
    with pytest.raises(SuiteError) as e:
        load_suite(p)
    msg = str(e.value)
    assert str(p) in msg or "s.yaml" in msg
    assert expected in msg


def test_metric_needing_missing_capability_is_rejected(tmp_path):
    from bench.adapter import Adapter
    from bench.registry import ADAPTERS, register_adapter

    @register_adapter("_tok_only_for_test")
    class TokOnly(Adapter):
        """Adapter with tokenize only (implemented: registration checks the Tokenizer contract)."""

        capabilities = frozenset({"tokenize"})
        codebook_sizes = property(lambda self: [2])
        encode = decode = lambda self, x: x

    try:
        p = write(tmp_path, GOOD.replace("adapter: vcq, params: {k_min: 2, k_max: 64}", "adapter: _tok_only_for_test"))
        with pytest.raises(SuiteError, match=r"metrics\[0\]: metric 'ar_loss' needs capability \['prior'\]"):
            load_suite(p)
    finally:
        ADAPTERS.pop("_tok_only_for_test")


def test_cli_validate_exits_2_without_traceback(tmp_path):
    p = write(tmp_path, GOOD.replace("k_min: 2, k_max: 64", "k_min: 8, k_max: 4"))
    r = CliRunner().invoke(main, ["validate", str(p)])
    assert r.exit_code == 2
    assert "methods[1].params.k_max" in r.output
    assert "Traceback" not in r.output


def test_shipped_suites_validate():
    for name in ["fmnist", "imagenet256", "cifar10"]:
        load_suite(name)


def test_unknown_suite_name_lists_known():
    with pytest.raises(SuiteError, match="known suites: .*fmnist"):
        load_suite("no_such_suite")


def test_list_commands():
    r = CliRunner().invoke(main, ["list", "adapters"])
    assert r.exit_code == 0 and "vq" in r.output and "vcq" in r.output
    r = CliRunner().invoke(main, ["list", "metrics"])
    assert "ar_loss" in r.output and "probe" in r.output
