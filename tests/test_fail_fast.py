"""`bench run` says what is missing before it imports torch, MLflow or an adapter (fail fast).

Timing thresholds would depend on the machine; what makes the failure fast is that none of the
heavy modules is imported before it, which is what these tests check (in a fresh interpreter).
"""
import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json, sys
from click.testing import CliRunner
from bench.cli import main
r = CliRunner().invoke(main, sys.argv[1:])
heavy = sorted(m for m in ("torch", "mlflow", "sklearn", "transformers", "bench.runner") if m in sys.modules)
print(json.dumps({"code": r.exit_code, "out": r.output, "heavy": heavy}))
"""


def _probe(args, **env):
    e = {k: v for k, v in os.environ.items() if k not in ("IMAGENET_DIR", "CIFAR10_DIR")}
    e.update(env)
    p = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=e, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("suite,var", [("imagenet256", "IMAGENET_DIR"), ("cifar10", "CIFAR10_DIR")])
def test_missing_data_exits_2_before_heavy_imports(suite, var):
    got = _probe(["run", suite])
    assert got["code"] == 2 and var in got["out"] and "Traceback" not in got["out"]
    assert got["heavy"] == [], f"imported before the data check: {got['heavy']}"


def test_imagenet_folder_without_splits_is_named(tmp_path):
    (tmp_path / "train").mkdir()
    got = _probe(["run", "imagenet256"], IMAGENET_DIR=str(tmp_path))
    assert got["code"] == 2 and str(tmp_path / "val") in got["out"] and got["heavy"] == []
