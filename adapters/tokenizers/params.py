"""Light declarations of the tokenizer family (imports no torch): the Params and Budget models of
its adapters and what they are (:func:`bench.registry.declare_adapter`), so `bench validate`
checks a tokenizer suite without loading torch. The implementations (:mod:`.vq`, :mod:`.vcq`,
:mod:`.wartok`, :mod:`.prologue`, and :mod:`.vq_tokenizer` / :mod:`.ar_prior` for the shared
configs) import these models.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

from pydantic import (BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, ValidationInfo, field_validator,
                      model_serializer, model_validator)

from bench.adapter import AdapterParams
from bench.registry import declare_adapter


class HashNeutralDefaults:
    """Mixin: fields named in ``hash_neutral`` are left out of ``model_dump`` while at their default.

    Config hashes and cache keys are hashes of the dumped, defaults-filled params; a field added
    later with a default that reproduces the old behaviour must not move them (the same rule as the
    suite's ``precision``: the default is not hashed). A non-default value is dumped and hashed.
    Round trip holds: a missing field validates to its default, which dumps as missing again.
    """

    hash_neutral: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_neutral_defaults(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict):
            names = {n for c in type(self).__mro__ for n in getattr(c, "hash_neutral", ())}
            for name in names:
                if name in data and getattr(self, name) == type(self).model_fields[name].get_default(
                        call_default_factory=True):
                    del data[name]
        return data


class TokenizerConfig(HashNeutralDefaults, BaseModel):
    """The shared image tokenizer. ``kind`` picks its encoder/decoder; quantiser and interface are shared."""

    model_config = ConfigDict(extra="forbid")
    hash_neutral: ClassVar[tuple[str, ...]] = ("kind",)
    kind: Literal["query1d", "raster2d"] = Field(
        "query1d", description="query1d: Transformer over [patches ; L learned queries], token t = query t (1D, "
        "ordered by learning); raster2d: each patch encoded on its own, token t = patch t of the "
        "(resolution/patch)^2 grid in raster order (2D; needs length = (resolution/patch)^2), "
        "the frozen 2D tokenizer of Prologue-Post (arXiv 2605.06137)")
    length: int = Field(16, gt=0, description="L, tokens per image")
    code_dim: int = Field(8, gt=0, description="d, code vector dimension")
    width: int = Field(64, gt=0)
    depth: int = Field(2, gt=0)
    heads: int = Field(4, gt=0)
    patch: int = Field(4, gt=0)
    beta: float = Field(0.25, ge=0)

    @model_validator(mode="after")
    def _heads_divide_width(self) -> "TokenizerConfig":
        _check_heads(self.width, self.heads, "width", "heads")
        return self


def _check_heads(width: int, heads: int, wname: str, hname: str) -> None:
    """Multi-head attention splits the width into equal heads: ``width % heads == 0``."""
    if isinstance(width, int) and isinstance(heads, int) and heads > 0 and width % heads:
        raise ValueError(f"{wname} {width} is not divisible by {hname} {heads} (attention splits the width "
                         f"into equal heads); use e.g. {wname} {max(heads, width - width % heads)}")


class PriorConfig(BaseModel):
    """Size and training recipe of the AR prior."""

    model_config = ConfigDict(extra="forbid")
    width: int = Field(128, gt=0)
    layers: int = Field(3, gt=0)
    heads: int = Field(4, gt=0)
    mlp_ratio: float = Field(2.0, gt=0)
    mask_logits_in_training: bool = True

    @model_validator(mode="after")
    def _heads_divide_width(self) -> "PriorConfig":
        _check_heads(self.width, self.heads, "width", "heads")
        return self


class TokenizerARBudget(BaseModel):
    """Training budgets shared by the tokenizer + AR-prior adapters (steps are optimizer steps)."""

    model_config = ConfigDict(extra="forbid")
    tokenizer_steps: int = Field(1000, ge=0)
    tokenizer_batch: int = Field(128, gt=0)
    tokenizer_lr: float = Field(1e-3, gt=0)
    prior_steps: int = Field(1000, ge=0)
    prior_batch: int = Field(128, gt=0)
    prior_lr: float = Field(1e-3, gt=0)
    label_dropout: float = Field(0.1, ge=0, le=1)
    prior_train_images: int | None = Field(None, gt=0, description="fit the prior on the first N train images")
    prior_val_images: int = Field(0, ge=0, description="hold out the last N of those images' tokens: validation CE "
                                                       "every prior_eval_every steps, the best state is kept")
    prior_eval_every: int = Field(100, gt=0, description="steps between validation evaluations of the prior")
    prior_patience: int = Field(0, ge=0, description="stop after this many evaluations without improvement (0: never)")

    @model_serializer(mode="wrap")
    def _omit_default_validation(self, handler):
        d = handler(self)  # no validation split: the dump (and every existing config hash) is unchanged
        if isinstance(d, dict) and d.get("prior_val_images") == 0:
            for k in ("prior_val_images", "prior_eval_every", "prior_patience"):
                d.pop(k, None)
        return d


def codebook_schedule(kind: str, k_min: int, k_max: int, length: int, gamma: float = 1.0) -> list[int]:
    """VCQ's K_t, t = 0..length-1 (monotone non-decreasing, K_0 = k_min, K_t <= k_max; see :mod:`.vcq`).

    Raises ValueError for an unknown ``kind``.
    """
    out = []
    for t in range(length):
        frac = t / (length - 1) if length > 1 else 1.0
        if kind == "log-linear":
            k = 2 ** (math.log2(k_min) + (math.log2(k_max) - math.log2(k_min)) * frac**gamma)
        elif kind == "doubling":
            k = min(k_max, k_min * 2**t)
        elif kind == "linear":
            k = k_min + (k_max - k_min) * frac
        else:
            raise ValueError(f"unknown codebook schedule {kind!r}")
        out.append(int(min(k_max, max(k_min, round(k)))))
    for i in range(1, length):  # rounding must not break monotonicity
        out[i] = max(out[i], out[i - 1])
    return out


def total_bits(sizes: list[int]) -> float:
    """Capacity of a token sequence with codebook sizes K_t: sum_t log2 K_t (bits per image)."""
    return float(sum(math.log2(k) for k in sizes))


def bits_matched_k(sizes: list[int]) -> int:
    """The uniform codebook size K whose L positions carry the same total bits as ``sizes``.

    K = the integer nearest (in bits, L * |log2 K - mean_t log2 K_t|) to 2 ** (mean_t log2 K_t),
    so a uniform-K tokenizer has the capacity of the VCQ schedule it is a control for (e.g.
    log-linear 2..256 at L = 16: 72 bits -> K = 23, 72.4 bits). >= 2.
    """
    if not sizes:
        raise ValueError("bits_matched_k: empty schedule")
    target = total_bits(sizes)
    lo = max(2, int(2 ** (target / len(sizes))))
    return min((lo, lo + 1), key=lambda k: abs(len(sizes) * math.log2(k) - target))


class BitsMatch(BaseModel):
    """A VCQ schedule whose total bits a uniform-K baseline matches (``vq`` ``match_bits_of``)."""

    model_config = ConfigDict(extra="forbid")
    schedule: Literal["log-linear", "doubling", "linear"] = "log-linear"
    k_min: int = Field(2, ge=1)
    k_max: int = Field(256, ge=2)
    gamma: float = Field(1.0, gt=0)


class VQParams(HashNeutralDefaults, AdapterParams):
    hash_neutral: ClassVar[tuple[str, ...]] = ("final_ar_conditional", "match_bits_of")
    codebook_size: int = Field(256, ge=2, description="K, the same at every position")
    match_bits_of: BitsMatch | None = Field(
        None, description="set K to the uniform codebook size with the total bits of this VCQ schedule "
                          "(bits_matched_k); then codebook_size must be left out or equal to it")
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    prior: PriorConfig = Field(default_factory=PriorConfig)
    temperature: float = Field(1.0, gt=0, description="sampling temperature (no guidance)")
    final_ar_conditional: bool = Field(
        True, description="True: the (final) AR prior is class-conditional (class BOS, label dropout); False: "
        "trained, evaluated and sampled with the null class only (unconditional), so class information "
        "carried by prologue tokens is not redundant with the label (arXiv 2605.06137)")

    @model_validator(mode="before")
    @classmethod
    def _matched_k(cls, data):
        if isinstance(data, dict) and data.get("match_bits_of") is not None:
            m = BitsMatch.model_validate(data["match_bits_of"])
            length = TokenizerConfig.model_validate(data.get("tokenizer") or {}).length
            k = bits_matched_k(codebook_schedule(m.schedule, m.k_min, m.k_max, length, m.gamma))
            if data.get("codebook_size") not in (None, k):
                raise ValueError(f"codebook_size {data['codebook_size']} contradicts match_bits_of, which gives K={k} "
                                 "(leave codebook_size out)")
            data = {**data, "codebook_size": k}
        return data


class VCQParams(HashNeutralDefaults, AdapterParams):
    hash_neutral: ClassVar[tuple[str, ...]] = ("final_ar_conditional",)
    k_min: int = Field(2, ge=1, description="K_1, the first position's codebook size")
    k_max: int = Field(256, ge=2, description="K_max, the shared codebook's size")
    schedule: Literal["log-linear", "doubling", "linear"] = "log-linear"
    gamma: float = Field(1.0, gt=0, description="log-linear schedule exponent")
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    prior: PriorConfig = Field(default_factory=PriorConfig)
    temperature: float = Field(1.0, gt=0)
    final_ar_conditional: bool = Field(True, description="as vq's: False = an unconditional AR prior (null class only)")

    @field_validator("k_max")
    @classmethod
    def _k_max_ge_k_min(cls, v: int, info: ValidationInfo) -> int:
        k_min = info.data.get("k_min")
        if k_min is not None and v < k_min:
            raise ValueError(f"must be >= k_min ({k_min}), got {v}")
        return v


class WARTokParams(VQParams):
    """wAR-Tok (arXiv 2605.06148): vq's tokenizer + lambda * WGF prior matching (see :mod:`.wartok`)."""

    hash_neutral: ClassVar[tuple[str, ...]] = ("control_diagnostics",)

    init: Literal["vq", "scratch"] = Field(
        "vq", description="'vq': fine-tune the converged vq tokenizer (vq's cache entry, same key) for the budget's "
                          "finetune_steps with L_rec + lam * L_wgf; 'scratch': train from scratch, reconstruction-only "
                          "warm start (warm_start_frac) then the joint phase, within tokenizer_steps")
    lam: float = Field(0.1, ge=0, description="lambda, weight of the prior-matching (WGF) term; 0 = the control: the "
                                              "same loop (auxiliary ARs trained) without the WGF term")
    target: Literal["frozen", "ema", "small"] = Field(
        "small", description="target prior p_theta: 'frozen' (T1, fitted on the starting tokens, then fixed), 'ema' "
                             "(T2, starts as T1, then an EMA of the tracker), 'small' (T3, a smaller AR trained by CE "
                             "on the current tokens, jointly with the tracker)")
    tau: float = Field(0.1, gt=0, description="temperature of the soft assignment softmax(cos/tau)")
    warm_start_frac: float | None = Field(None, ge=0, lt=1, description="init 'scratch' only: fraction of tokenizer "
                                                                      "steps with reconstruction only (default 0.3)")
    aux_prior: PriorConfig = Field(default_factory=lambda: PriorConfig(width=128, layers=2, heads=4),
                                   description="size of the tracking AR q_phi (and of the frozen/EMA target)")
    target_prior: PriorConfig = Field(default_factory=lambda: PriorConfig(width=64, layers=1, heads=2),
                                      description="size of the 'small' target (T3 only)")
    aux_lr: float = Field(1e-3, gt=0, description="AdamW learning rate of the auxiliary ARs")
    aux_steps: int = Field(1, ge=1, description="q_phi CE steps per tokenizer step")
    target_fit_steps: int = Field(300, ge=0, description="steps fitting the target (and tracker) on start tokens")
    target_fit_images: int = Field(10000, gt=0, description="train images tokenized to fit the target / fresh priors")
    ema_decay: float = Field(0.99, ge=0, le=1, description="EMA decay of the 'ema' target")
    tvc_every: int = Field(50, gt=0, description="log the TVC view every this many tokenizer steps")
    fresh_prior_checks: int = Field(0, ge=0, description="points at which a fresh AR is fitted on current tokens")
    fresh_prior_steps: int = Field(200, gt=0, description="steps of each fresh-AR fit")
    control_diagnostics: bool = Field(
        True, description="lam = 0 only: run the auxiliary ARs and log the TVC view (the control's prior-consistency "
                          "gap). false skips them: the tokenizer is the same bit for bit (they never touch it; "
                          "their randomness is forked), the fine-tune ~2x cheaper, the TVC curves absent")
    recon_images: int = Field(2000, gt=0, description="first N train images whose reconstruction MSE (pixels in "
                                                      "[0, 1]) is logged as tokenizer_recon_mse (and of the vq start "
                                                      "as base_tokenizer_recon_mse)")

    @model_validator(mode="after")
    def _diagnostics_off_only_at_lambda_zero(self):
        if not self.control_diagnostics and self.lam != 0:
            raise ValueError(f"control_diagnostics: false applies to the lam = 0 control only (lam is {self.lam}: "
                             "the auxiliary ARs are the method); remove it or set lam: 0")
        return self

    @model_validator(mode="after")
    def _warm_start_needs_scratch(self):
        if self.init != "scratch" and self.warm_start_frac is not None:
            raise ValueError(f"warm_start_frac applies to init: scratch only (init is {self.init!r}: the vq tokenizer "
                             "is the warm start and the budget's finetune_steps the joint phase); remove it or set "
                             "init: scratch")
        return self

    @property
    def warm_frac(self) -> float:
        """warm_start_frac, 0.3 when not given (init: scratch)."""
        return 0.3 if self.warm_start_frac is None else self.warm_start_frac


class WARTokBudget(TokenizerARBudget):
    """vq's budgets plus wAR-Tok's fine-tune of the vq tokenizer (``init: vq``; method-level ``budget:`` keys).

    The ``tokenizer_*`` keys train the vq start exactly as vq does (same cache entry); the fine-tune
    comes on top, for ``lam > 0`` and its ``lam = 0`` control alike (so the control has the same steps).
    """

    finetune_steps: int = Field(300, ge=0, description="tokenizer steps of the fine-tune (init: vq)")
    finetune_batch: int | None = Field(None, gt=0, description="fine-tune batch size (default: tokenizer_batch)")
    finetune_lr: float | None = Field(None, gt=0, description="fine-tune peak AdamW LR, warm-up + cosine as for the "
                                                              "tokenizer (default: tokenizer_lr)")


class PrologueBudget(TokenizerARBudget):
    """vq's budgets plus the alternating prologue-path training (method-level ``budget:`` keys)."""

    prologue_steps: int = Field(1000, ge=0, description="alternating (encoder step, AR step) iterations")
    prologue_batch: int = Field(128, gt=0)
    prologue_lr: float = Field(1e-3, gt=0, description="prologue encoder + codebook learning rate")
    joint_prior_lr: float = Field(1e-3, gt=0, description="joint AR learning rate")


class PrologueParams(VQParams):
    hash_neutral: ClassVar[tuple[str, ...]] = ("prologue_signal",)
    prologue_signal: Literal["ce", "random"] = Field(
        "ce", description="ce: the prologue encoder is trained by the joint AR's CE (the method); random: the "
        "control, the prologue encoder left at its seeded init (no CE signal), prologue tokens still computed "
        "and the final AR trained identically, so a gain is not just 'P extra tokens'")
    n_prologue: int = Field(4, gt=0, description="P, prologue tokens per image")
    prologue_codebook_size: int = Field(32, ge=2, description="K_p, the prologue codebook size")
    prologue_code_dim: int | None = Field(None, gt=0, description="prologue code dim (default: tokenizer.code_dim)")
    tau: float = Field(0.1, gt=0, description="ProbQ temperature on cosine similarities")
    prologue_width: int = Field(64, gt=0)
    prologue_depth: int = Field(2, gt=0)
    prologue_heads: int = Field(4, gt=0)
    joint_prior: PriorConfig = Field(default_factory=lambda: PriorConfig(width=128, layers=3, heads=4),
                                     description="the small joint AR that trains the prologue (discarded)")
    visual_dropout: float = Field(0.5, ge=0, le=1, description="fraction of samples whose visual inputs become EOS")
    ce_weight_prologue: float = Field(3.0, ge=0, description="weight of CE on prologue + EOS targets")
    ce_weight_visual: float = Field(3.0, ge=0, description="weight of CE on visual targets")
    prologue_temperature: float | None = Field(None, gt=0, description="sampling temperature on prologue tokens")

    @model_validator(mode="after")
    def _prologue_heads_divide_width(self):
        _check_heads(self.prologue_width, self.prologue_heads, "prologue_width", "prologue_heads")
        return self


_CAPS = ("tokenize", "generate", "prior")
declare_adapter("vq", "adapters.tokenizers.vq:VQAdapter", VQParams, _CAPS, TokenizerARBudget)
declare_adapter("vcq", "adapters.tokenizers.vcq:VCQAdapter", VCQParams, _CAPS, TokenizerARBudget)
declare_adapter("wartok", "adapters.tokenizers.wartok:WARTokAdapter", WARTokParams, _CAPS, WARTokBudget)
declare_adapter("prologue", "adapters.tokenizers.prologue:PrologueAdapter", PrologueParams, _CAPS, PrologueBudget)
