"""Quality guards of the few-step reward metrics, and NCT's control error, on the fixed noise bank.

A reward gain counts only if quality holds (TDM-R1, arXiv 2603.07700: rewards rise "without losing
quality"; reward hacking shows as quality loss or collapse). At every NFE of the reward metric
(:mod:`bench.metrics.reward_nfe`, same ``steps`` / ``method_steps``), on the same bank images:

* ``fewstep_quality``:
  - ``fd_bank_nfe<s>``: Fréchet distance (Heusel et al. 2017, arXiv 1706.08500; torch-fidelity's
    formula, :func:`bench.metrics.frechet.frechet_distance`) between the n bank images and the first n
    *test* images in the 64-d features of the FD instrument ``fmnist-cnn-v1`` (a different network
    from every reward judge, so judge gains do not leak into it);
  - ``drift_fd_nfe<s>``: the same distance to the drift reference's images of the same bank rows (the
    generator the method was derived from, :func:`bench.metrics.fewstep.drift_reference`; blank for a
    method without one): how far training moved it;
  - ``diversity_nfe<s>``: within-class diversity, the per-pixel standard deviation over a class's images
    (pixels in [0, 1]) averaged over pixels and classes; ``diversity_real`` is that of the n test
    images. Collapse shows as a value far below it.
* ``control_error`` (NCT, arXiv 2506.19741, Table 1 "consistency"): the bank rows paired with controls
  of *independent* real test images of the same class (:func:`bench.metrics.fewstep.bank_controls`),
  ``control_err_nfe<s>``: mean per-image error between h(x) and the requested control (an adapter that
  does not accept the control kind runs uncontrolled: the reference); with ``sources`` holding ``base``
  also ``control_err_base_nfe<s>``: the same with controls h(x') of the base's images x' of the
  independent bank (other noises, same classes: the controls NCT trains on, from the generator's own
  law); and ``control_fd_base_nfe<s>``: FD (``fmnist-cnn-v1``) between the controlled images and the
  base's *uncontrolled images of the independent bank* (NCT's "FID vs the base model": distributional,
  so the uncontrolled arm's value is the base-vs-base sampling floor, not 0 by pairing). The base is
  the adapter's drift reference (the adapter itself at s when it has none).
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from bench import inputs as inp
from bench.metrics.base import Column, Metric, MetricParams, check_finite
from bench.metrics.fd_fmnist import DEFAULT_INSTRUMENT, KIND
from bench.metrics.frechet import nfe_key, sweep_key
from bench.metrics.reward_nfe import StepsParams, all_steps, steps_for
from bench.registry import register_metric


class QualityParams(StepsParams):
    classifier: str = Field(DEFAULT_INSTRUMENT, description="FD feature instrument (bench/instruments/, kind "
                                                            "fmnist-classifier)")
    batch_size: int = Field(1000, gt=0, description="feature extractor batch size")
    drift: bool = Field(True, description="also the drift FD against the method's drift reference")
    floor: bool = Field(False, description="also fd_real_floor: FD between the first n and the next n test images "
                                           "(the real-vs-real floor of fd_bank; needs 2n test images)")

    @field_validator("classifier")
    @classmethod
    def _registered(cls, v: str) -> str:
        from bench import instruments

        try:
            instruments.card(v, KIND)
        except instruments.InstrumentError as e:
            raise ValueError(str(e)) from None
        return v


def within_class_diversity(images: Any, labels: Any) -> float:
    """Mean over classes of the mean per-pixel std (ddof 0, pixels / 255) of that class's images.

    uint8 [n, C, H, W], int64 [n] -> float in [0, 0.5]; classes with fewer than 2 images are skipped
    (0.0 when none has 2).
    """
    import torch

    x = images.double() / 255.0
    vals = [float(x[labels == c].std(0, unbiased=False).mean()) for c in torch.unique(labels).tolist()
            if int((labels == c).sum()) >= 2]
    return sum(vals) / len(vals) if vals else 0.0


def _fd(p: Any, adapter: Any, params: QualityParams, a: inp.InputSpec, b: inp.InputSpec) -> float:
    from bench.metrics.frechet import frechet_distance

    inst, bs = params.classifier, params.batch_size
    return frechet_distance(p.get(inp.features(inst, a, bs), adapter), p.get(inp.features(inst, b, bs), adapter))


def _log_instrument(ctx: Any, name: str, params: QualityParams) -> None:
    from bench.instruments.features import extractor

    for k, v in {**extractor(params.classifier).provenance(), "n": params.n}.items():
        ctx.log_param(f"{name}.{k}", v)


@register_metric("fewstep_quality")
class FewStepQuality(Metric):
    """FD vs test, drift FD vs the drift reference and within-class diversity of the bank images per NFE."""

    requires = ("generate",)
    Params: ClassVar[type[MetricParams]] = QualityParams

    @classmethod
    def inputs(cls, params: QualityParams) -> list[inp.InputSpec]:
        inst, bs = params.classifier, params.batch_size
        out = [inp.real_test(params.n), inp.features(inst, inp.real_test(params.n), bs)]
        if params.floor:
            out.append(inp.features(inst, inp.real_test(2 * params.n), bs))
        out += [inp.features(inst, inp.bank(params.n, s), bs) for s in all_steps(params)]
        return out + ([inp.features(inst, inp.bank_base(params.n), bs)] if params.drift else [])

    @classmethod
    def columns(cls, params: QualityParams) -> dict[str, Column]:
        tag = f"{params.classifier}, bank n={params.n}"
        cols: dict[str, Column] = {}
        for s in all_steps(params):
            cols[sweep_key("fd_bank", s)] = Column(f"FD vs test ({tag}, NFE={s})", False, short=f"FD@{s}")
            if params.drift:
                cols[sweep_key("drift_fd", s)] = Column(f"drift FD vs drift reference ({tag}, NFE={s})", False,
                                                        short=f"drift@{s}")
            cols[sweep_key("diversity", s)] = Column(f"within-class pixel std (bank n={params.n}, NFE={s})", None,
                                                     short=f"div@{s}")
        cols["diversity_real"] = Column(f"within-class pixel std of the first {params.n} test images", None,
                                        short="div_real")
        if params.floor:
            cols["fd_real_floor"] = Column(f"FD of the first vs the next {params.n} test images ({tag})", False,
                                           short="FD_floor")
        for s in all_steps(params):
            cols[nfe_key(s)] = Column(f"measured NFE (steps={s})", higher_is_better=False, unit="NFE", kind="cost",
                                      short=f"NFE{s}")
        return cols

    def compute(self, adapter: Any, ctx: Any, params: QualityParams) -> dict[str, float]:
        from bench.instruments.features import extractor
        from bench.metrics.fewstep import drift_reference

        extractor(params.classifier).check(ctx)
        p = inp.provider(ctx)
        real = p.get(inp.real_test(params.n))
        out: dict[str, float] = {"diversity_real": within_class_diversity(real.images, real.labels)}
        if params.floor:
            from bench.metrics.frechet import frechet_distance

            f = p.get(inp.features(params.classifier, inp.real_test(2 * params.n), params.batch_size))
            out["fd_real_floor"] = frechet_distance(f[: params.n], f[params.n: 2 * params.n])
        has_ref = params.drift and drift_reference(adapter) is not None
        for s in steps_for(params, ctx):
            bank = inp.bank(params.n, s)
            split = p.get(bank, adapter)
            out[nfe_key(s)] = p.bank_nfe(bank)
            step = int(round(out[nfe_key(s)]))
            vals = {"fd_bank": _fd(p, adapter, params, bank, inp.real_test(params.n)),
                    "diversity": within_class_diversity(split.images, split.labels)}
            if has_ref:
                vals["drift_fd"] = _fd(p, adapter, params, bank, inp.bank_base(params.n))
            for k, v in vals.items():
                out[sweep_key(k, s)] = v
                ctx.log_metric(k, v, step)  # the vs-NFE history
        if has_ref:
            ref, ref_steps = drift_reference(adapter)
            ctx.log_param("fewstep_quality.drift_reference",
                          f"{getattr(ref, 'registry_name', type(ref).__name__)} at steps={ref_steps}")
        _log_instrument(ctx, "fewstep_quality", params)
        return check_finite(out, "fewstep_quality")


class ControlParams(QualityParams):
    control: Literal["lowres7", "edges", "class"] = Field("lowres7", description="the control kind "
                                                          "(bench.metrics.fewstep.CONTROLS)")
    steps: list[int] = Field(default_factory=lambda: [1], min_length=1, description="NFEs evaluated (NCT: one step)")
    drift: bool = Field(True, description="also the FD against the base's uncontrolled images of the independent bank")
    sources: list[Literal["real", "base"]] = Field(
        default_factory=lambda: ["real"], min_length=1, description="where the requested controls come from: real "
        "test images (control_err_nfe<s>) and/or the base's images of the independent bank (control_err_base_nfe<s>)")

    @field_validator("sources")
    @classmethod
    def _real_first(cls, v: list[str]) -> list[str]:
        if "real" not in v or len(set(v)) != len(v):
            raise ValueError("sources must hold 'real' (the control_err key) once, optionally 'base'")
        return v


@register_metric("control_error")
class ControlError(Metric):
    """Error between h(x) and independent real controls, and FD vs the uncontrolled base images, per NFE."""

    requires = ("generate",)
    Params: ClassVar[type[MetricParams]] = ControlParams

    @classmethod
    def inputs(cls, params: ControlParams) -> list[inp.InputSpec]:
        inst, bs = params.classifier, params.batch_size
        out = [inp.real_test(params.n)] + [inp.features(inst, inp.bank(params.n, s, params.control), bs)
                                           for s in all_steps(params)]
        if "base" in params.sources:
            out += [inp.bank(params.n, s, params.control, "base") for s in all_steps(params)]
        return out + ([inp.features(inst, inp.bank_base_indep(params.n, s), bs) for s in all_steps(params)]
                      if params.drift else [])

    @classmethod
    def columns(cls, params: ControlParams) -> dict[str, Column]:
        from bench.metrics.fewstep import CONTROLS

        cols: dict[str, Column] = {}
        for s in all_steps(params):
            cols[sweep_key("control_err", s)] = Column(
                f"control error {params.control} ({CONTROLS[params.control].unit}; bank n={params.n}, NFE={s})", False,
                short=f"ctl@{s}", uncertainty="within-cell standard error over the bank's images")
            if "base" in params.sources:
                cols[sweep_key("control_err_base", s)] = Column(
                    f"control error {params.control}, controls of base samples ({CONTROLS[params.control].unit}; "
                    f"bank n={params.n}, NFE={s})", False, short=f"ctlb@{s}",
                    uncertainty="within-cell standard error over the bank's images")
            if params.drift:
                cols[sweep_key("control_fd_base", s)] = Column(
                    f"FD controlled vs base samples of other noises ({params.classifier}, bank n={params.n}, NFE={s})",
                    False, short=f"FDb@{s}")
        return cols

    def compute(self, adapter: Any, ctx: Any, params: ControlParams) -> dict[str, float]:
        from bench.metrics.fewstep import bank_controls, control_error, extract_control

        p = inp.provider(ctx)
        accepts = params.control in (getattr(adapter, "controls", None) or ())
        out: dict[str, float] = {}
        for s in steps_for(params, ctx):
            bank = inp.bank(params.n, s, params.control)
            split = p.get(bank, adapter)
            errs = {"control_err": control_error(bank_controls(params.control, ctx.dataset.test, split.labels),
                                                 split.images)}
            if "base" in params.sources:  # controls h(x') of the base's images of the independent bank
                controls = extract_control(params.control, p.get(inp.bank_base_indep(params.n, s), adapter).images)
                errs["control_err_base"] = control_error(
                    controls, p.get(inp.bank(params.n, s, params.control, "base"), adapter).images)
            for name, err in errs.items():
                key = sweep_key(name, s)
                out[key] = float(err.mean())
                out[f"{key}_stderr"] = float(err.std()) / math.sqrt(len(err)) if len(err) > 1 else 0.0
            if params.drift:  # distributional: vs the base's uncontrolled images of other noises
                out[sweep_key("control_fd_base", s)] = _fd(p, adapter, params, bank, inp.bank_base_indep(params.n, s))
        ctx.log_param("control_error.control", params.control)
        ctx.log_param("control_error.controlled", accepts)
        _log_instrument(ctx, "control_error", params)
        return check_finite(out, "control_error")
