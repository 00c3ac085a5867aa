"""docs/plugins.md, as a user would follow it: build the FSQ plugin package from the page's code blocks,
validate its suite (light: no torch), check the quantiser, and run the suite with --limit."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench import registry

DOC = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
REPO = DOC.parents[1]


def _files(text: str) -> dict[str, str]:
    """Every fenced code block whose first line is ``# file: PATH``, as {PATH: contents}."""
    out = {}
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        first, _, body = block.partition("\n")
        if first.startswith("# file: "):
            out[first.removeprefix("# file: ").strip()] = block
    return out


@pytest.fixture
def built(tmp_path, monkeypatch):
    """The page's files written under tmp_path; the package importable (as `pip install -e` would make it)."""
    files = _files(DOC.read_text())
    assert {"genbench_fsq/pyproject.toml", "genbench_fsq/genbench_fsq/params.py",
            "genbench_fsq/genbench_fsq/adapter.py", "fsq_vs_vq.yaml"} <= set(files)
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path / "genbench_fsq"))
    registry.load_all()
    before = dict(registry.ADAPTERS), dict(registry.ADAPTER_META)
    yield tmp_path
    registry.ADAPTERS.clear(), registry.ADAPTERS.update(before[0])
    registry.ADAPTER_META.clear(), registry.ADAPTER_META.update(before[1])
    for m in [m for m in sys.modules if m == "genbench_fsq" or m.startswith("genbench_fsq.")]:
        sys.modules.pop(m)


def test_the_pages_entry_point_names_the_light_module(built):
    doc = tomllib.loads((built / "genbench_fsq/pyproject.toml").read_text())
    assert doc["project"]["entry-points"]["genbench.adapters"] == {"fsq": "genbench_fsq.params"}


def test_the_pages_suite_validates_light(built):
    """`bench validate` of the page's suite in a fresh process: ok, and torch never imported."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(built / "genbench_fsq"), str(REPO)])}
    code = ("import sys; from click.testing import CliRunner; from bench.cli import main; "
            f"r = CliRunner().invoke(main, ['validate', {str(built / 'fsq_vs_vq.yaml')!r}]); print(r.output); "
            "print('torch imported:', 'torch' in sys.modules); sys.exit(r.exit_code)")
    t0 = time.time()
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok (2 methods" in r.stdout and "torch imported: False" in r.stdout, r.stdout
    print(f"validate with the plugin: {time.time() - t0:.1f} s")


def test_fsq_quantiser_round_trips_and_the_tokenizer_trains(built):
    import torch

    from adapters.tokenizers.params import TokenizerConfig
    from adapters.tokenizers.raster_tokenizer import make_tokenizer
    from adapters.tokenizers.vq_tokenizer import Quantiser, train_tokenizer
    from genbench_fsq.adapter import FSQ

    q = FSQ([4, 4, 4], 4)
    assert isinstance(q, Quantiser) and q.codebook_sizes == [64] * 4
    z = torch.randn(5, 4, 3, requires_grad=True)
    vec, ids, loss = q.quantise(z)
    assert ids.shape == (5, 4) and int(ids.min()) >= 0 and int(ids.max()) < 64 and float(loss) == 0
    assert torch.equal(q.vectors(ids), vec.detach())  # ids -> vectors is the quantiser's own forward value
    vec.sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0  # straight-through
    torch.manual_seed(0)
    tok = make_tokenizer(TokenizerConfig(length=4, width=32, depth=1, heads=2, code_dim=3), [64] * 4, 1, 28, q)
    assert "codebook" not in dict(tok.named_parameters()) and tok.quantiser is q
    images = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8)
    stats = train_tokenizer(tok, images, 3, 16, 1e-3, 0, show_progress=False)
    assert stats["rec_loss"] > 0
    assert tok.decode(tok.encode(images[:4])).shape == (4, 1, 28, 28)
    with pytest.raises(ValueError, match="quantiser's codebook_sizes"):
        make_tokenizer(TokenizerConfig(length=4, code_dim=3), [16] * 4, 1, 28, q)


def test_fsq_params_name_the_inconsistent_field(built):
    from genbench_fsq.params import FSQParams

    with pytest.raises(ValueError, match=r"codebook_size must be the product of levels \(64\)"):
        FSQParams.model_validate({"codebook_size": 60, "levels": [4, 4, 4], "tokenizer": {"code_dim": 3}})
    with pytest.raises(ValueError, match=r"tokenizer.code_dim must be len\(levels\) = 3"):
        FSQParams.model_validate({"codebook_size": 64, "levels": [4, 4, 4]})


@pytest.mark.slow
def test_the_pages_suite_runs_with_limit_and_fsq_has_its_own_weights(built, tracking_uri, results_dir):
    from bench.cli import main
    from bench.tracking import Tracker

    r = CliRunner().invoke(main, ["run", str(built / "fsq_vs_vq.yaml"), "--limit", "4", "--tracking-uri",
                                  tracking_uri, "--no-progress"])
    assert r.exit_code == 0, r.output
    tr = Tracker(tracking_uri)
    runs = {x.data.tags["bench.method"]: x for x in tr.cell_runs(tr.experiment_id("fsq_vs_vq.limit4", create=False))}
    assert set(runs) == {"vq", "fsq"} and "recon_mse" in runs["fsq"].data.metrics
    fsq, vq = runs["fsq"].data, runs["vq"].data
    assert fsq.params["tokenizer_cache_key"] != vq.params["tokenizer_cache_key"]
    assert fsq.tags["bench.code.class"] == "genbench_fsq.adapter:FSQAdapter"
    assert fsq.tags["bench.code.plugin.genbench_fsq.adapter"].startswith("not installed")
    assert "bench.code.module.genbench_fsq.adapter" in fsq.tags and fsq.tags["bench.lease.state"] == "released"
