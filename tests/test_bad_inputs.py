"""The bad-input corpus: every malformed suite or data file is one clear exit-2 error.

Each case is written into ``tmp_path`` and run through the CLI (``bench validate``, or ``bench run``
where the problem only shows when the data is read). Each must exit 2, name the field or file,
and print no traceback (nor click's bare "Aborted!").
"""
from __future__ import annotations

import gzip
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

from bench.cli import main

BASE = """\
name: t
dataset: {name: fmnist}
seeds: [0, 1]
methods:
  - {name: vq, adapter: vq, baseline: true, params: {codebook_size: 16}}
  - {name: vcq, adapter: vcq, params: {k_min: 2, k_max: 16}}
budget: {tokenizer_steps: 1, prior_steps: 1}
metrics:
  - {name: ar_loss}
  - {name: probe, params: {ks: [1, 2]}}
  - {name: rfd_fmnist, params: {n: 10}}
  - {name: gfid, params: {n: 10}}
leaderboard: {sort_by: ar_loss}
"""


def sub(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
DEEP = "(" * 200 + "ar_loss(vq)" + ")" * 200 + " < ar_loss(vcq)"
CLAIM = "claims:\n  - {{name: c, paper: p, assert: {a!r}{extra}}}\n"


def claim(assertion: str, extra: str = "") -> str:
    return BASE + CLAIM.format(a=assertion, extra=extra)


# (id, suite text or bytes, expected substring of the message)
SUITES = [
    ("not-utf8", "name: caf\xe9\n".encode("latin-1") + BASE.encode()[7:], "not UTF-8"),
    ("utf16", BASE.encode("utf-16"), "not UTF-8"),
    ("empty", "", "empty"),
    ("only-comments", "# nothing\n", "no YAML content"),
    ("scalar", "just a string\n", "must be a YAML mapping"),
    ("list", "- a\n- b\n", "must be a YAML mapping"),
    ("bad-yaml", "name: [unclosed\n", "not valid YAML"),
    ("dup-key-top", BASE + "name: again\n", "duplicate key 'name'"),
    ("dup-key-nested", sub("{codebook_size: 16}", "{codebook_size: 16, codebook_size: 8}"), "duplicate key 'codebook_size'"),
    ("billion-laughs", LAUGHS, "aliases"),
    ("huge-int-seed", sub("[0, 1]", "[" + "9" * 400 + "]"), "seeds[0]: the integer (400 digits)"),
    ("huge-int-param", sub("codebook_size: 16", "codebook_size: " + "1" * 400), "methods[0].params.codebook_size"),
    ("int64-seed", sub("[0, 1]", f"[{2**63}]"), "seeds[0]"),
    ("string-seed", sub("[0, 1]", "['0', 1]"), "seeds[0]"),
    ("bool-seed", sub("[0, 1]", "[true, 1]"), "seeds[0]"),
    ("negative-seed", sub("[0, 1]", "[-1, 1]"), "seeds"),
    ("duplicate-seed", sub("[0, 1]", "[1, 1]"), "duplicate seed"),
    ("float-seed", sub("[0, 1]", "[0.5]"), "seeds[0]"),
    ("empty-seeds", sub("[0, 1]", "[]"), "seeds"),
    ("string-param", sub("codebook_size: 16", "codebook_size: '16'"), "methods[0].params.codebook_size"),
    ("bool-param", sub("codebook_size: 16", "codebook_size: true"), "methods[0].params.codebook_size"),
    ("string-budget", sub("tokenizer_steps: 1", "tokenizer_steps: '1'"), "budget.tokenizer_steps"),
    ("string-metric-n", sub("{n: 10}}\n  - {name: gfid", "{n: '10'}}\n  - {name: gfid"), "metrics[2].params.n"),
    ("string-n_train", sub("{name: fmnist}", "{name: fmnist, n_train: '10'}"), "dataset.n_train"),
    ("string-tol", claim("ar_loss(vq) < ar_loss(vcq) + tol", ", tol: '0.1'"), "claims[0].tol"),
    ("string-probe-k", sub("{ks: [1, 2]}", "{ks: [1, '2']}"), "metrics[1].params.ks"),
    ("nan-param", sub("prior_steps: 1}", "prior_steps: 1, tokenizer_lr: .nan}"), "budget.tokenizer_lr"),
    ("metric-n-over-test", sub("rfd_fmnist, params: {n: 10}", "rfd_fmnist, params: {n: 70000}"), "metrics[2].params.n"),
    ("metric-n-over-n_test", sub("{name: fmnist}", "{name: fmnist, n_test: 5}"), "metrics[2].params.n"),
    ("gfid-n-over-n_train", sub("{name: fmnist}", "{name: fmnist, n_train: 5}"), "metrics[3].params.n"),
    ("probe-n_train-over", sub("{ks: [1, 2]}", "{ks: [1, 2], n_train: 100000}"), "metrics[1].params.n_train"),
    ("n_train-over-split", sub("{name: fmnist}", "{name: fmnist, n_train: 70000}"), "dataset.n_train"),
    ("probe-k-over-L", sub("{ks: [1, 2]}", "{ks: [1, 17]}"), "metrics[1].params.ks"),
    ("probe-k-over-short-L", sub("{codebook_size: 16}", "{codebook_size: 16, tokenizer: {length: 4}}")
     .replace("ks: [1, 2]", "ks: [1, 8]"), "metrics[1].params.ks"),
    ("sort-by-unknown", sub("sort_by: ar_loss", "sort_by: gfd"), "leaderboard.sort_by"),
    ("columns-unknown", sub("sort_by: ar_loss}", "sort_by: ar_loss, columns: [ar_loss, fid]}"), "leaderboard.columns[1]"),
    ("resolution", sub("{name: fmnist}", "{name: fmnist, resolution: 32}"), "dataset.resolution"),
    ("adm-on-fmnist", sub("gfid, params: {n: 10}", "gfid, params: {n: 10, reference: adm}"), "metrics[3].params.reference"),
    ("dataset-params", sub("{name: fmnist}", "{name: fmnist, params: {tasks: [x]}}"), "dataset.params"),
    ("base-model-unused", BASE + "base_model: {name: qwen3-tiny}\n", "base_model"),
    ("unknown-dataset", sub("{name: fmnist}", "{name: mnist}"), "dataset.name"),
    ("claim-deep", claim(DEEP), "claims[0].assert"),
    ("claim-huge-literal", claim("ar_loss(vq) < " + "9" * 5000), "claims[0].assert"),
    ("claim-big-literal", claim("ar_loss(vq) < 1e300 * ar_loss(vcq)"), "claims[0].assert"),
    ("claim-div-literal-zero", claim("ar_loss(vq) / 0 < ar_loss(vcq)"), "division by zero"),
    ("claim-div-tol-zero", claim("ar_loss(vq) / tol < ar_loss(vcq)", ", tol: 0"), "claims[0].tol"),
    ("claim-long", claim(" + ".join(["ar_loss(vq)"] * 200) + " < ar_loss(vcq)"), "claims[0].assert"),
]


# More kinds: YAML structure, tags, missing sections, params, claims, plugins.
PEFT = ("name: p\ndataset: {{name: peft_tasks}}\n{base}seeds: [0]\nmethods:\n"
        "  - {{name: lora, adapter: lora, baseline: true}}\nmetrics:\n  - {{name: {metric}}}\n")
SUITES += [
    ("alias-bomb-in-dataset-params", LAUGHS + "name: t\n" + BASE.split("\n", 1)[1].replace(
        "{name: fmnist}", "{name: fmnist, params: {x: *i}}"), "aliases"),
    ("deep-yaml-list", sub("{name: fmnist}", "{name: fmnist, params: {x: " + "[" * 3000 + "]" * 3000 + "}}"),
     "nested too deeply"),
    ("deep-yaml-map", sub("{name: fmnist}", "{name: fmnist, params: " + "{a: " * 3000 + "1" + "}" * 3000 + "}"),
     "nested too deeply"),
    ("binary", bytes(range(256)) * 8, "not UTF-8"),
    ("nul-byte", BASE.encode() + b"\x00", "s.yaml"),
    ("python-tag", BASE + "x: !!python/object/apply:os.system ['echo pwned']\n", "s.yaml"),
    ("custom-tag", sub("codebook_size: 16", "codebook_size: !int 16"), "s.yaml"),
    ("tab-indent", BASE.replace("  - {name: ar_loss}", "\t- {name: ar_loss}"), "not valid YAML"),
    ("null-document", "~\n", "no YAML content"),
    ("two-documents", BASE + "---\n" + BASE, "s.yaml"),
    ("unknown-top-key", BASE + "colour: red\n", "colour"),
    ("missing-methods", "\n".join(x for x in BASE.splitlines() if "methods" not in x and "adapter" not in x) + "\n",
     "methods"),
    ("missing-metrics", BASE.split("metrics:")[0] + "leaderboard: {sort_by: ar_loss}\n", "metrics"),
    ("missing-dataset", sub("dataset: {name: fmnist}\n", ""), "dataset"),
    ("missing-name", sub("name: t\n", ""), "name"),
    ("name-path", sub("name: t\n", "name: ../../etc\n"), "name"),
    ("name-empty", sub("name: t\n", "name: ''\n"), "name"),
    ("seeds-scalar", sub("seeds: [0, 1]", "seeds: 0"), "seeds"),
    ("seeds-nested", sub("seeds: [0, 1]", "seeds: [[0]]"), "seeds[0]"),
    ("methods-mapping", sub("methods:\n", "methods: {a: 1}\nx_methods:\n"), "methods"),
    ("duplicate-method-name", sub("{name: vcq, adapter: vcq", "{name: vq, adapter: vcq"), "vq"),
    ("unknown-adapter", sub("adapter: vcq", "adapter: vcqq"), "methods[1].adapter"),
    ("unknown-param", sub("codebook_size: 16", "codebook_size: 16, colour: red"), "methods[0].params.colour"),
    ("nested-unknown-param", sub("codebook_size: 16", "codebook_size: 16, tokenizer: {lenght: 4}"),
     "methods[0].params.tokenizer.lenght"),
    ("k_max-below-k_min", sub("k_min: 2, k_max: 16", "k_min: 32, k_max: 16"), "methods[1].params.k_max"),
    ("negative-budget", sub("tokenizer_steps: 1", "tokenizer_steps: -1"), "budget.tokenizer_steps"),
    ("unknown-budget-key", sub("prior_steps: 1}", "prior_steps: 1, epochs: 3}"), "budget.epochs"),
    ("inf-param", sub("prior_steps: 1}", "prior_steps: 1, tokenizer_lr: .inf}"), "budget.tokenizer_lr"),
    ("method-budget-string", sub("params: {k_min: 2, k_max: 16}}", "params: {k_min: 2, k_max: 16}, budget: {prior_steps: x}}"),
     "methods[1].budget.prior_steps"),
    ("unknown-metric", sub("{name: ar_loss}", "{name: ar_los}"), "metrics[0].name"),
    ("unknown-metric-param", sub("{name: ar_loss}", "{name: ar_loss, params: {m: 1}}"), "metrics[0].params.m"),
    ("probe-k-zero", sub("{ks: [1, 2]}", "{ks: [0, 2]}"), "metrics[1].params.ks"),
    ("probe-ks-empty", sub("{ks: [1, 2]}", "{ks: []}"), "metrics[1].params.ks"),
    ("kid-subset-over-n", sub("gfid, params: {n: 10}", "gfid, params: {n: 10, kid_subset_size: 20}"), "metrics[3].params"),
    ("unknown-instrument", sub("rfd_fmnist, params: {n: 10}", "rfd_fmnist, params: {n: 10, classifier: nope-v9}"),
     "metrics[2].params.classifier"),
    ("n_train-zero", sub("{name: fmnist}", "{name: fmnist, n_train: 0}"), "dataset.n_train"),
    ("n_test-negative", sub("{name: fmnist}", "{name: fmnist, n_test: -5}"), "dataset.n_test"),
    ("metric-n-one", sub("rfd_fmnist, params: {n: 10}", "rfd_fmnist, params: {n: 1}"), "metrics[2].params.n"),
    ("sort-by-number", sub("sort_by: ar_loss", "sort_by: 3"), "leaderboard.sort_by"),
    ("claim-unknown-method", claim("ar_loss(vqq) < ar_loss(vcq)"), "claims[0]"),
    ("claim-unknown-metric", claim("fid(vq) < ar_loss(vcq)"), "claims[0]"),
    ("claim-syntax", claim("ar_loss(vq) <<< ar_loss(vcq)"), "claims[0].assert"),
    ("claim-code", claim("__import__('os').system('x') < 1"), "claims[0].assert"),
    ("claim-attribute", claim("ar_loss(vq).real < 1"), "claims[0].assert"),
    ("claim-no-comparison", claim("ar_loss(vq) + ar_loss(vcq)"), "claims[0].assert"),
    ("claim-level", claim("ar_loss(vq) < ar_loss(vcq)", ", level: 1.5"), "claims[0].level"),
    ("claim-test", claim("ar_loss(vq) < ar_loss(vcq)", ", test: ttest"), "claims[0].test"),
    ("plugin-missing", BASE + "plugins: [no_such_module_xyz]\n", "plugins[0]"),
    ("plugins-scalar", BASE + "plugins: no_such_module_xyz\n", "plugins"),
    ("peft-unknown-generated-task", PEFT.replace("{{name: peft_tasks}}", "{{name: peft_tasks, params: {{tasks: [peft_topix]}}}}")
     .format(base="base_model: {name: qwen3-tiny}\n", metric="lm_accuracy"), "dataset.params.tasks"),
    ("peft-without-base-model", PEFT.format(base="", metric="lm_accuracy"), "base_model"),
    ("peft-capability-missing", PEFT.format(base="base_model: {name: qwen3-tiny}\n", metric="ar_loss"), "metrics[0]"),
]

@pytest.fixture
def fmnist_dir(tmp_path, monkeypatch):
    """A tiny, valid Fashion-MNIST (20 train / 10 test images) at BENCH_FMNIST_DIR."""
    d = tmp_path / "fmnist"
    d.mkdir()
    write_split(d, "train", 20)
    write_split(d, "t10k", 10)
    monkeypatch.setenv("BENCH_FMNIST_DIR", str(d))
    return d


def idx(n: int, images: bool, payload_n: int | None = None) -> bytes:
    m = payload_n if payload_n is not None else n
    if images:
        head = (0x803).to_bytes(4, "big") + n.to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
        return head + np.zeros(m * 784, np.uint8).tobytes()
    return (0x801).to_bytes(4, "big") + n.to_bytes(4, "big") + (np.arange(m) % 10).astype(np.uint8).tobytes()


def write_split(d, prefix: str, n: int) -> None:
    (d / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx(n, True)))
    (d / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx(n, False)))


def invoke(*args):
    r = CliRunner().invoke(main, list(args))
    out = r.output + (r.stderr if r.stderr_bytes is not None else "")
    return r, out


def assert_clean_exit_2(r, out, expected):
    assert r.exit_code == 2, (r.exit_code, out, r.exception)
    assert expected in out, out
    assert "Traceback" not in out and "Aborted!" not in out, out
    assert out.startswith("error: "), out


@pytest.mark.parametrize("text, expected", [pytest.param(t, e, id=i) for i, t, e in SUITES])
def test_bad_suite(tmp_path, fmnist_dir, text, expected):
    p = tmp_path / "s.yaml"
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    r, out = invoke("validate", str(p))
    assert_clean_exit_2(r, out, expected)
    assert str(p) in out  # the file is named


def test_base_is_valid(tmp_path, fmnist_dir):
    p = tmp_path / "s.yaml"
    p.write_text(BASE)
    r, out = invoke("validate", str(p))
    assert r.exit_code == 0, out


def test_directory_as_suite(tmp_path):
    r, out = invoke("validate", str(tmp_path))
    assert_clean_exit_2(r, out, "is a directory")


def test_missing_suite_file(tmp_path):
    r, out = invoke("validate", str(tmp_path / "nope.yaml"))
    assert_clean_exit_2(r, out, "no such suite file")


def test_billion_laughs_is_quick(tmp_path):
    import time

    p = tmp_path / "s.yaml"
    p.write_text(LAUGHS)
    t0 = time.perf_counter()
    r, out = invoke("validate", str(p))
    assert_clean_exit_2(r, out, "aliases")
    assert time.perf_counter() - t0 < 5


# Broken data files: (id, file to break, how, message, command)
IMG, LAB = "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"
DATA = [
    ("garbled", IMG, lambda b: b"\x1f\x8b" + bytes(range(256)) * 4, "is broken", "validate"),
    ("empty", IMG, lambda b: b"", "is broken", "validate"),
    ("not-gzip", LAB, lambda b: gzip.decompress(b), "not a readable gzip file", "validate"),
    ("bad-magic", IMG, lambda b: gzip.compress(b"\x00\x00\x09\x99" + gzip.decompress(b)[4:]), "magic number", "validate"),
    ("short-header", LAB, lambda b: gzip.compress(b"\x00\x00"), "shorter than", "validate"),
    ("wrong-shape", IMG, lambda b: gzip.compress(idx(20, True)[:8] + (32).to_bytes(4, "big") * 2 + idx(20, True)[16:]),
     "28x28", "validate"),
    ("fewer-labels-header", LAB, lambda b: gzip.compress(idx(15, False)), "15 labels for the 20 images", "validate"),
    ("truncated-gzip", IMG, lambda b: b[: len(b) // 2], "truncated", "run"),
    ("fewer-labels-payload", LAB, lambda b: gzip.compress(idx(20, False, payload_n=15)), "announces 20 items", "run"),
    ("label-out-of-range", LAB, lambda b: gzip.compress(idx(20, False)[:8] + bytes([42] * 20)), "outside 0..9", "run"),
    ("directory-as-file", IMG, None, "is broken", "validate"),
    ("half-the-labels", LAB, lambda b: gzip.compress(idx(10, False)), "10 labels for the 20 images", "validate"),
    ("labels-not-gzip-garbage", LAB, lambda b: b"\x00" * 64, "not a readable gzip file", "validate"),
    ("truncated-labels-gzip", LAB, lambda b: b[: len(b) - 8], "truncated", "run"),
]


@pytest.mark.parametrize("fname, how, expected, cmd", [pytest.param(f, h, e, c, id=i) for i, f, h, e, c in DATA])
def test_broken_data(tmp_path, fmnist_dir, monkeypatch, fname, how, expected, cmd):
    monkeypatch.setenv("BENCH_RESULTS_DIR", str(tmp_path / "results"))
    target = fmnist_dir / fname
    if how is None:
        target.unlink()
        target.mkdir()
    else:
        target.write_bytes(how(target.read_bytes()))
    p = tmp_path / "s.yaml"
    p.write_text(BASE)
    args = ["validate", str(p)] if cmd == "validate" else \
        ["run", str(p), "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--no-progress"]
    r, out = invoke(*args)
    assert_clean_exit_2(r, out, expected)
    assert str(target) in out  # names the file
    assert "apt-get install --reinstall dataset-fashion-mnist" in out and "BENCH_FMNIST_DIR" in out
    assert not (tmp_path / "mlflow.db").exists()  # nothing was run


# Claims: division by zero at evaluation time is an inconclusive verdict, not a traceback.
@pytest.mark.parametrize("assertion, tol, values, test", [
    ("ar_loss(a) / ar_loss(b) < 1", None, {"a": [1.0, 2.0], "b": [0.0, 0.0]}, "bootstrap"),
    ("ar_loss(a) / (ar_loss(b) - 1) < 1", None, {"a": [1.0, 2.0], "b": [1.0, 1.0]}, "bootstrap"),
    ("ar_loss(a) < ar_loss(b) / tol", 0.0, {"a": [1.0, 2.0], "b": [1.0, 3.0]}, "bootstrap"),
    ("ar_loss(a) < ar_loss(b) / tol", 0.0, {"a": [1.0, 2.0], "b": [1.0, 3.0]}, "welch"),
])
def test_claim_division_by_zero_is_inconclusive(assertion, tol, values, test):
    from bench.claims import INCONCLUSIVE, evaluate_claim
    from bench.suite import ClaimSpec

    c = ClaimSpec(name="c", paper="p", assert_=assertion, tol=tol, test=test)
    rows = {m: {"ar_loss": v} for m, v in values.items()}
    v = evaluate_claim(c, rows)
    assert v.verdict == INCONCLUSIVE, v.detail
