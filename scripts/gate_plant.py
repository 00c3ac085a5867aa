"""Plant a regression of known size and run the gate on it: how the gate's detection sizes are measured.

    .venv/bin/python scripts/gate_plant.py PLANT [bench gate arguments ...]

e.g. ``env $CI_NUMERICS .venv/bin/python scripts/gate_plant.py prior70 ci --baseline results/baselines/ci.json
--workdir results/gate/plant-prior70``. The plant is a monkeypatch in this process only (nothing in the
tree changes, the config hashes stay the baseline's), so the gate sees exactly what a code regression
of that size would produce. Plants:

* ``priorNN``: the AR prior trains NN % of its steps (e.g. prior70, prior50);
* ``codebookNN``: vq's tokenizer uses only NN % of its K codes at every position;
* ``fdNNN``: every Fréchet distance (rFD/gFD in the ci suite) is multiplied by NNN/100 (e.g. fd105);
* ``probeNN``: the probe's reported accuracies are multiplied by NN/100.

Plants that touch different metrics combine with ``+`` (e.g. ``prior90+probe97``) so that one gate run
measures both.
"""
from __future__ import annotations

import dataclasses
import re
import sys


def plant(name: str) -> None:
    m = re.fullmatch(r"(prior|codebook|fd|probe)(\d+)", name)
    if not m:
        sys.exit(f"unknown plant {name!r}: use priorNN, codebookNN, fdNNN or probeNN")
    kind, f = m.group(1), int(m.group(2)) / 100
    if kind == "prior":
        import adapters.tokenizers.vq as vq

        orig = vq.train_prior

        def train_prior(prior, tokens, labels, budget, *a, **k):
            return orig(prior, tokens, labels, dataclasses.replace(budget, steps=max(1, round(budget.steps * f))), *a, **k)

        vq.train_prior = train_prior
    elif kind == "codebook":
        import adapters.tokenizers.vq as vq

        cls = vq.VQAdapter if hasattr(vq, "VQAdapter") else next(
            c for c in vars(vq).values() if isinstance(c, type) and getattr(c, "registry_name", None) == "vq")
        base = cls.schedule
        cls.schedule = lambda self: ([max(2, round(k * f)) for k in base(self)]
                                     if type(self) is cls else base(self))
    elif kind == "fd":
        import bench.metrics.frechet as fr  # the one Fréchet implementation (rFD/gFD, and rFID/gFID)

        orig_fd = fr.frechet_distance
        fr.frechet_distance = lambda a, b: orig_fd(a, b) * f
    else:
        import bench.metrics.probe as probe

        cls = next(c for c in vars(probe).values() if isinstance(c, type) and hasattr(c, "compute")
                   and getattr(c, "registry_name", None) == "probe")
        orig_c = cls.compute
        cls.compute = lambda self, *a, **k: {key: v * f for key, v in orig_c(self, *a, **k).items()}


if __name__ == "__main__":
    for one in sys.argv[1].split("+"):
        plant(one)
    from bench.cli import main

    sys.argv = ["bench", "gate", *sys.argv[2:]]
    main()
