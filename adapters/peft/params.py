"""Light declarations of the PEFT family (imports no torch): the Params and Budget models of its
adapters and what they are (:func:`bench.registry.declare_adapter`), so `bench validate` checks a
PEFT suite without loading torch or transformers. The implementations (:mod:`.lora`,
:mod:`.layer_card`, :mod:`.prefix_tuning`, :mod:`.prefix_tuning_plus`) import these models.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bench.adapter import AdapterParams
from bench.registry import declare_adapter

LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""The linear layers of a Qwen3 decoder layer that LoRA can adapt."""


class FinetuneBudget(BaseModel):
    """The suite's ``budget`` block for the PEFT suites (validated by every PEFT adapter).

    ``steps`` optimiser steps of ``batch_size`` examples at peak learning rate ``lr``;
    ``timing_warmup`` first steps are excluded from the median s/step; sequences are cut to
    ``max_length`` tokens (from the left of the context); ``eval_batch_size`` is lm-eval's batch.
    ``cpu_threads`` caps torch's intra-op threads while the cell trains and evaluates (restored
    afterwards): on a small, shared CPU box one thread avoids OpenMP oversubscription, which made
    2-thread runs several times slower here.
    """

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(150, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(10, ge=0)
    timing_warmup: int = Field(5, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    max_length: int = Field(256, ge=8)
    eval_batch_size: int = Field(64, ge=1)
    val_every: int = Field(0, ge=0, description=(
        "log the validation loss (nats/token, MLflow metric val_loss with its step) every this many steps "
        "and at the last step; 0: no validation curve"))
    val_examples: int = Field(64, ge=1, description="validation examples (the split's first) of the curve")
    cpu_threads: int | None = Field(None, ge=1, description="torch CPU threads during the cell (None: leave)")


class LoraParams(AdapterParams):
    input_filler_tokens: int = Field(0, ge=0, le=4096, description=(
        "the model reads this many filler tokens before every input, in training and scoring "
        "(adapters.peft.input_length: the input-length sweep); 0: the task's own prompt only"))
    rank: int = Field(4, ge=1, description="LoRA rank r")
    alpha: float = Field(8.0, gt=0, description="LoRA alpha (scale alpha / r)")
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: list(LINEARS))
    match_params: int | None = Field(None, ge=1, description=(
        "choose the rank whose trainable-parameter count on the suite's base model is closest to this "
        "(matched arms; an error beyond match_tol; rank is then ignored); alpha is used as given "
        "(scale alpha / chosen rank)"))
    match_tol: float = Field(0.02, gt=0, lt=1, description="relative mismatch allowed with match_params")

    @model_validator(mode="after")
    def _targets(self):
        unknown = [m for m in self.target_modules if m not in LINEARS]
        if unknown:
            raise ValueError(f"target_modules: unknown {unknown}; known: {list(LINEARS)}")
        return self


class LayerCardParams(AdapterParams):
    rank: int = Field(4, ge=1)
    alpha: float = Field(8.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: list(LINEARS))
    placement: Literal["card", "all", "top", "bottom", "mid", "uniform", "random"] = "card"
    k: int | None = Field(2, ge=1, description="number of adapted layers (null: limited by cost_budget only)")
    cost_budget: float | None = Field(None, gt=0, le=1, description="max cost as a fraction of all-layer LoRA")
    cost_key: Literal["params", "flops"] = "params"
    score: Literal["probe", "res_over_eact", "resnorm"] = "probe"
    rho_max: float = Field(0.5, gt=0, le=1.0001)
    calib_examples: int = Field(16, ge=1, description="calibration batch (training examples) for the card")
    ridge: float = Field(1e-4, ge=0)
    probe_steps: int = Field(20, ge=0, description="steps of each single-layer probe (0: no probes)")
    probe_val_examples: int = Field(128, ge=1)
    card_seed: int = 0

    @model_validator(mode="after")
    def _rule(self):
        if self.placement == "card" and self.k is None and self.cost_budget is None:
            raise ValueError("placement 'card' needs k or cost_budget")
        if self.placement not in ("card", "all") and self.k is None:
            raise ValueError(f"placement {self.placement!r} needs k")
        if self.score == "probe" and self.probe_steps == 0:
            raise ValueError("score 'probe' needs probe_steps > 0")
        return self


class PlacementSweepParams(LayerCardParams):
    """``layer_placements``: the Layer Card judged as a ranking. Every k-of-L placement
    (or a seeded sample of ``max_placements`` of them) is fine-tuned with the same LoRA config and
    seed; the card's pick is ranked among them by test accuracy."""

    max_placements: int | None = Field(None, ge=2, description=(
        "train at most this many placements: a seeded random sample (always containing the card's pick "
        "and the top/bottom/mid/uniform placements); null: all C(L, k)"))
    sample_seed: int = Field(0, description="seed of the placement sample (with max_placements)")
    sweep_steps: int | None = Field(None, ge=1, description="steps of each placement's fine-tune (null: budget.steps)")
    eval_limit: int | None = Field(200, ge=1, description="test documents per task that rank the placements")

    @model_validator(mode="after")
    def _sweep_rule(self):
        if self.placement != "card" or self.k is None or self.cost_budget is not None:
            raise ValueError("layer_placements ranks the card's k-layer pick: placement 'card', k set, no cost_budget")
        return self


class PrefixParams(AdapterParams):
    input_filler_tokens: int = Field(0, ge=0, le=4096, description=(
        "the model reads this many filler tokens before every input, in training and scoring "
        "(adapters.peft.input_length: the input-length sweep); 0: the task's own prompt only"))
    num_virtual_tokens: int = Field(16, ge=1, description="prefix length p")
    prefix_projection: bool = Field(False, description="reparameterise through an MLP (more parameters)")
    encoder_hidden_size: int | None = Field(None, ge=1)
    init_weights: Literal["random", "zero"] = Field("random", description="peft init: random N(0,1) or zero K/V")


class PrefixPlusParams(AdapterParams):
    input_filler_tokens: int = Field(0, ge=0, le=4096, description=(
        "the model reads this many filler tokens before every input, in training and scoring "
        "(adapters.peft.input_length: the input-length sweep); 0: the task's own prompt only"))
    feature_map: Literal["elu", "elu1", "gelu"] = "elu"
    rank: int | None = Field(None, ge=1, description="low-rank memory M^h = A^h B^h; null = full d x d")
    match_params: int | None = Field(None, ge=1, description="choose the rank to match this many parameters")

    @model_validator(mode="after")
    def _one_of(self):
        if self.rank is not None and self.match_params is not None:
            raise ValueError("give rank or match_params, not both")
        return self


_FT = ("finetune",)
declare_adapter("lora", "adapters.peft.lora:LoRA", LoraParams, _FT, FinetuneBudget)
declare_adapter("layer_card", "adapters.peft.layer_card:LayerCardLoRA", LayerCardParams, _FT, FinetuneBudget)
declare_adapter("layer_placements", "adapters.peft.placement_sweep:LayerPlacements", PlacementSweepParams, _FT,
                FinetuneBudget)
declare_adapter("prefix_tuning", "adapters.peft.prefix_tuning:PrefixTuning", PrefixParams, _FT, FinetuneBudget)
declare_adapter("prefix_tuning_plus", "adapters.peft.prefix_tuning_plus:PrefixTuningPlus", PrefixPlusParams, _FT,
                FinetuneBudget)

from adapters.peft.base_specs import Qwen3HFSpec, TinySpec  # noqa: E402
from bench.suite import declare_base_model  # noqa: E402

declare_base_model("qwen3-tiny", TinySpec)
declare_base_model("qwen3-8b", Qwen3HFSpec)
