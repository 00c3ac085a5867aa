"""A tiny, deterministic plugin for the executor tests: a synthetic data set, an adapter, a metric.

``toy_fit`` fits a linear model to the data set's synthetic regression problem with plain gradient
descent for ``steps`` steps (``sleep_s`` seconds each, so a test can kill a worker mid-cell), logging
``toy_step_loss`` per step. With ``$GENBENCH_TOY_MARKERS`` set, it writes ``<method>-s<seed>.<pid>``
there when it starts, so a test knows which process runs which cell. With ``$GENBENCH_TOY_HOLD`` =
``<count>:<timeout_s>`` as well, a started cell waits until ``count`` cells have started (markers), at most
``timeout_s``, so racing drivers' workers provably hold cells at the same time. ``$GENBENCH_TOY_DRIVER`` is
logged as param ``toy_driver`` (which driver's worker ran the cell).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from pydantic import Field

from bench.adapter import Adapter, AdapterParams
from bench.metrics.base import Column, Metric, MetricParams
from bench.registry import register_adapter, register_dataset, register_metric


class _Split:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def head(self, n):
        return self if n is None else _Split(self.x[:n], self.y[:n])


class _Data:
    def __init__(self, train):
        self.train = self.test = train


@register_dataset("toy_regression")
class ToyRegression:
    """64 x 8 synthetic regression inputs and targets (fixed generator seed)."""

    @staticmethod
    def load(spec):
        g = torch.Generator().manual_seed(1234)
        x = torch.randn(64, 8, generator=g, dtype=torch.float64)
        y = x @ torch.arange(1.0, 9.0, dtype=torch.float64) + 0.1 * torch.randn(64, generator=g, dtype=torch.float64)
        return _Data(_Split(x, y))


class ToyParams(AdapterParams):
    lr: float = Field(0.05, gt=0, description="gradient-descent step size")


@register_adapter("toy_linear")
class ToyLinear(Adapter):
    """A linear model with seeded random initial weights."""

    Params = ToyParams

    def __init__(self, params, seed):
        self.params, self.seed = params, seed

    def prepare(self, ctx):
        self.w = torch.randn(8, generator=torch.Generator().manual_seed(ctx.seed), dtype=torch.float64)


class FitParams(MetricParams):
    steps: int = Field(20, gt=0, description="gradient steps")
    sleep_s: float = Field(0.0, ge=0, description="seconds to sleep per step")


@register_metric("toy_fit")
class ToyFit(Metric):
    Params = FitParams

    @classmethod
    def columns(cls, params):
        return {"toy_loss": Column("toy loss", False, "mse")}

    def compute(self, adapter, ctx, params):
        markers = os.environ.get("GENBENCH_TOY_MARKERS")
        if markers:
            Path(markers, f"{ctx.method.name}-s{ctx.seed}.{os.getpid()}").touch()
            hold = os.environ.get("GENBENCH_TOY_HOLD")
            if hold:
                count, timeout = hold.split(":")
                deadline = time.monotonic() + float(timeout)
                while len(list(Path(markers).iterdir())) < int(count) and time.monotonic() < deadline:
                    time.sleep(0.1)
        if os.environ.get("GENBENCH_TOY_DRIVER"):
            ctx.log_param("toy_driver", os.environ["GENBENCH_TOY_DRIVER"])
        x, y, w = ctx.dataset.train.x, ctx.dataset.train.y, adapter.w.clone()
        for step in range(params.steps):
            r = x @ w - y
            w -= adapter.params.lr * 2 * x.T @ r / len(y)
            ctx.log_metric("toy_step_loss", float((r**2).mean()), step)
            time.sleep(params.sleep_s)
        return {"toy_loss": float(((x @ w - y) ** 2).mean())}
