"""A synthetic leaderboard in a temporary MLflow store: known values, stderrs, artifacts, a <script> label.

Three methods of a copy of tests/suites/smoke.yaml (vq baseline, vcq, and an extra "evil" vq whose
label is ``<script>``), one seed each: per-seed values with ``<key>_stderr``, the entropy
metric's per-position history, a ``samples/`` grid and a ``plots/`` figure logged as artifacts.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from conftest import SUITES

EVIL_LABEL = "<script>alert('x')</script>"


def _png(path: Path, seed: int, size: int = 48) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def make_suite(tmp_path: Path):
    from bench.suite_file import load_suite

    doc = yaml.safe_load((SUITES / "smoke.yaml").read_text())
    evil = dict(doc["methods"][0], name="vq_evil", label=EVIL_LABEL, baseline=False)
    evil["params"] = dict(evil["params"], codebook_size=8)
    doc["methods"].append(evil)
    doc["claims"] = [
        {"name": "vcq lowers NLL", "paper": "arXiv 2605.06207", "assert": "bits_per_image(vcq) < bits_per_image(vq)"},
        {"name": "probe tie", "paper": "toy", "assert": "probe@1(vcq) > probe@1(vq)"},
    ]
    p = tmp_path / "board_suite.yaml"
    p.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_suite(p)


VALUES = {  # method -> key -> (value, stderr or None)
    "vq": {"ar_loss": (2.10, 0.01), "bits_per_image": (24.0, 0.2), "probe_k1": (0.40, 0.02),
           "probe_k2": (0.52, 0.02), "probe_kall": (0.60, 0.02), "cliff_position": (3.0, None),
           "t_star": (3.0, None), "entropy_first_token": (3.9, None), "cell_seconds": (10.0, None)},
    "vcq": {"ar_loss": (1.70, 0.01), "bits_per_image": (20.0, 0.2), "probe_k1": (0.41, 0.02),
            "probe_k2": (0.55, 0.02), "probe_kall": (0.61, 0.02), "cliff_position": (4.0, None),
            "t_star": (5.0, None), "entropy_first_token": (1.0, None), "cell_seconds": (12.0, None)},
    "vq_evil": {"ar_loss": (2.50, 0.01), "bits_per_image": (30.0, 0.2), "probe_k1": (0.30, 0.02),
                "probe_k2": (0.40, 0.02), "probe_kall": (0.50, 0.02), "cliff_position": (2.0, None),
                "t_star": (3.0, None), "entropy_first_token": (3.0, None), "cell_seconds": (9.0, None)},
}


def make_store(tmp_path: Path, tracking_uri: str):
    """(suite, tracker) with one finished seed-0 run per method, artifacts included."""
    from bench.plan import config_hash
    from bench.tracking import TAG, Tracker

    suite = make_suite(tmp_path)
    tr = Tracker(tracking_uri)
    exp = tr.experiment_id(suite.name)
    art = tmp_path / "art"
    for i, m in enumerate(suite.methods):
        tags = {f"{TAG}kind": "cell", f"{TAG}method": m.name, f"{TAG}seed": 0, f"{TAG}config_hash": config_hash(suite, m),
                f"{TAG}baseline": str(m.baseline).lower(), f"{TAG}git_sha": "abc123", f"{TAG}version.torch": "2.14.1",
                f"{TAG}numerics.cpu": "toy cpu"}
        run = tr.start(exp, f"{m.name}-s0", tags)
        vals = {}
        for k, (v, se) in VALUES[m.name].items():
            vals[k] = v
            if se is not None:
                vals[f"{k}_stderr"] = se
        tr.log_metrics(run, vals)
        for t, h in enumerate([3.9, 3.0, 1.5 + i * 0.3, 0.2, 0.0]):
            tr.log_metrics(run, {"entropy_bits": h}, step=t)
        for sub in ("samples", "plots"):
            (art / m.name / sub).mkdir(parents=True, exist_ok=True)
        tr.client.log_artifact(run, str(_png(art / m.name / "samples" / "samples_gfd_fmnist.png", i)), "samples")
        tr.client.log_artifact(run, str(_png(art / m.name / "plots" / "entropy.png", 10 + i, 64)), "plots")
        tr.end(run, "FINISHED")
    return suite, tr


def write_report(tmp_path: Path, tracking_uri: str) -> Path:
    """Build the synthetic store and write its leaderboard files into ``tmp_path/out``; the HTML path."""
    from bench import leaderboard

    board = leaderboard.build(*make_store(tmp_path, tracking_uri))
    return leaderboard.write(board, tmp_path / "out")["html"]
