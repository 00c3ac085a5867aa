"""The light metric modules (:mod:`bench.registry`, "light declarations"): each registers its
metric(s) with Params, ``requires``, ``columns`` and ``inputs`` and imports torch only where it
computes, so `bench validate` imports these instead of every module of the package. A metric module
missing here is still found (slower: :func:`bench.registry.meta` falls back to importing everything);
tests/test_light_validate.py checks that this list registers every metric.
"""
from bench.metrics import (ar_loss, code_usage, diffusion, entropy, fd_fmnist, fewstep_quality, fid,  # noqa: F401
                           inception_score, lm_accuracy, peft_cost, prc, probe, recon, reward_nfe)
