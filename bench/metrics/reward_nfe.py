"""reward@NFE: mean reward ± 95 % CI on the fixed noise bank, in-domain and out-of-domain, per NFE.

TDM-R1 (arXiv 2603.07700) reports the trained reward of few-step generators at 4 NFE beside rewards
it was not trained on (out-of-domain scorers), against multi-step bases at many NFE. Here: the
adapter draws the first n rows of the noise bank (:func:`bench.metrics.fewstep.noise_bank`, the same
z and classes for every method and NFE, so differences are paired) at each NFE of ``steps`` (teacher-
like methods get their own list through ``method_steps``, drawn as reference lines), and every image
is scored by the in-domain reward and by each out-of-domain reward (``ood``, default the reward's
registered partners) through :func:`bench.rewards.score` (detached uint8, no gradient).

Outputs per reward r and NFE s: ``reward_<r>_nfe<s>`` (mean), ``reward_<r>_nfe<s>_stderr`` (within-cell
standard error; the leaderboard turns it into the 95 % CI), and the measured NFE ``nfe_steps<s>``; the
exact 95 % interval (Wilson for binary rewards, Student t otherwise, :func:`bench.rewards.mean_ci95`)
is logged as ``reward_<r>_nfe<s>_ci95_lo`` / ``_hi``, the reward's provenance as params.
"""
from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from bench import inputs as inp
from bench.metrics.base import MAX_NFE, Column, Metric, MetricParams, check_finite
from bench.metrics.frechet import nfe_key, sweep_key
from bench.registry import register_metric

STUDENT_STEPS = [1, 2, 4, 8]
TEACHER_STEPS = [4, 8, 16, 50, 100]  # the reference NFEs for a multi-step teacher (method_steps)


class StepsParams(MetricParams):
    """NFE lists shared by the few-step metrics: ``steps`` for every method unless ``method_steps`` names it."""

    n: int = Field(gt=1, description="noise-bank rows (images) per NFE")
    steps: list[int] = Field(default_factory=lambda: list(STUDENT_STEPS), min_length=1,
                             description="NFEs (sampler steps) every method is evaluated at")
    method_steps: dict[str, list[int]] = Field(default_factory=dict,
                                               description="method name -> its own NFE list (e.g. the teacher: "
                                                           "[4, 8, 16, 50, 100]); such methods are reference lines")

    @field_validator("steps")
    @classmethod
    def _steps(cls, v: list[int]) -> list[int]:
        if any(s < 1 for s in v) or len(set(v)) != len(v):
            raise ValueError(f"steps must be distinct integers >= 1, got {v}")
        if any(s > MAX_NFE for s in v):
            raise ValueError(f"steps {[s for s in v if s > MAX_NFE]} above {MAX_NFE} (the most NFE a metric samples at)")
        return v

    @field_validator("method_steps")
    @classmethod
    def _method_steps(cls, v: dict[str, list[int]]) -> dict[str, list[int]]:
        for name, s in v.items():
            if not s or any(x < 1 for x in s) or len(set(s)) != len(s):
                raise ValueError(f"method_steps.{name}: must be distinct integers >= 1, got {s}")
            if any(x > MAX_NFE for x in s):
                raise ValueError(f"method_steps.{name}: steps above {MAX_NFE} (the most NFE a metric samples at)")
        return v


def all_steps(params: StepsParams) -> list[int]:
    """Every NFE any method is evaluated at (the columns), sorted."""
    return sorted(set(params.steps).union(*[set(s) for s in params.method_steps.values()]))


def steps_for(params: StepsParams, ctx: Any) -> list[int]:
    """The NFE list of this cell's method."""
    return list(params.method_steps.get(getattr(ctx.method, "name", None), params.steps))


class RewardNFEParams(StepsParams):
    reward: str = Field(description="registered reward (bench.rewards), the in-domain one")
    params: dict[str, Any] = Field(default_factory=dict, description="the reward's parameters (its Params)")
    ood: list[str] | None = Field(None, description="out-of-domain rewards scored beside it (None: the reward's "
                                                    "registered partners; [] for none)")
    ood_params: dict[str, dict[str, Any]] = Field(default_factory=dict, description="out-of-domain reward -> its params")
    real: bool = Field(False, description="also each reward of the first n test images with their own labels "
                                          "(reward_<r>_real: the rate real images reach)")

    @model_validator(mode="after")
    def _rewards(self) -> "RewardNFEParams":
        from bench.rewards import RewardError, get_reward

        try:
            r = get_reward(self.reward)
            r.params(self.params)
            if self.ood is None:
                self.ood = list(r.ood)
            if self.reward in self.ood or len(set(self.ood)) != len(self.ood):
                raise ValueError(f"ood must be distinct rewards other than {self.reward!r}, got {self.ood}")
            for name in self.ood:
                get_reward(name).params(self.ood_params.get(name))
            extra = sorted(set(self.ood_params) - set(self.ood))
            if extra:
                raise ValueError(f"ood_params names rewards not in ood: {extra}")
        except RewardError as e:  # pydantic reports ValueErrors with the field path
            raise ValueError(str(e)) from None
        return self


def reward_key(name: str, steps: int) -> str:
    """Output key of reward ``name`` at ``steps`` (``reward_judge_nfe4``)."""
    return sweep_key(f"reward_{name}", steps)


@register_metric("reward_nfe")
class RewardAtNFE(Metric):
    """Mean reward (in-domain and out-of-domain) of noise-bank images at each NFE."""

    requires = ("generate",)
    Params: ClassVar[type[MetricParams]] = RewardNFEParams

    @classmethod
    def rewards(cls, params: RewardNFEParams) -> list[tuple[str, dict[str, Any], str]]:
        """[(reward, its params, "in-domain" | "out-of-domain")], the in-domain one first."""
        return [(params.reward, params.params, "in-domain")] + [(o, params.ood_params.get(o, {}), "out-of-domain")
                                                                 for o in params.ood]

    @classmethod
    def inputs(cls, params: RewardNFEParams) -> list[inp.InputSpec]:
        return [inp.bank(params.n, s) for s in all_steps(params)] + ([inp.real_test(params.n)] if params.real else [])

    @classmethod
    def columns(cls, params: RewardNFEParams) -> dict[str, Column]:
        from bench.rewards import get_reward

        cols: dict[str, Column] = {}
        for name, _, domain in cls.rewards(params):
            r = get_reward(name)
            for s in all_steps(params):
                cols[reward_key(name, s)] = Column(
                    f"reward {name} ({domain}, bank n={params.n}, NFE={s})", r.higher_is_better,
                    short=f"R:{name}@{s}", uncertainty="within-cell standard error over the bank's images")
            if params.real:
                cols[f"reward_{name}_real"] = Column(f"reward {name} ({domain}) of the first {params.n} test images",
                                                     r.higher_is_better, short=f"R:{name}@real",
                                                     uncertainty="within-cell standard error over the test images")
        for s in all_steps(params):
            cols[nfe_key(s)] = Column(f"measured NFE (steps={s})", higher_is_better=False, unit="NFE", kind="cost",
                                      short=f"NFE{s}")
        return cols

    def compute(self, adapter: Any, ctx: Any, params: RewardNFEParams) -> dict[str, float]:
        from bench.adapter import Conditioning
        from bench.rewards import get_reward, mean_ci95, score

        p = inp.provider(ctx)
        out: dict[str, float] = {}
        for s in steps_for(params, ctx):
            spec = inp.bank(params.n, s)
            split = p.get(spec, adapter)
            nfe = p.bank_nfe(spec)
            out[nfe_key(s)] = nfe
            for name, rparams, _ in self.rewards(params):
                r = get_reward(name)
                v = score(r, split.images, Conditioning(labels=split.labels), rparams)
                m, se, lo, hi = mean_ci95(v.numpy(), r.binary)
                key = reward_key(name, s)
                out[key], out[f"{key}_stderr"] = m, se
                ctx.log_metric(f"{key}_ci95_lo", lo, None)
                ctx.log_metric(f"{key}_ci95_hi", hi, None)
                ctx.log_metric(f"reward_{name}", m, int(round(nfe)))  # reward-vs-NFE history
        if params.real:
            real = p.get(inp.real_test(params.n))
            for name, rparams, _ in self.rewards(params):
                r = get_reward(name)
                v = score(r, real.images, Conditioning(labels=real.labels), rparams)
                m, se, _, _ = mean_ci95(v.numpy(), r.binary)
                out[f"reward_{name}_real"], out[f"reward_{name}_real_stderr"] = m, se
        for name, rparams, domain in self.rewards(params):
            for k, v in get_reward(name).record(rparams).items():
                ctx.log_param(f"reward_nfe.{name}.{k}", v)
        ctx.log_param("reward_nfe.n", params.n)
        ctx.log_param("reward_nfe.steps", ",".join(map(str, steps_for(params, ctx))))
        return check_finite(out, "reward_nfe")
