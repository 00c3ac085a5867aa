"""The adapter interface: one class per research method, with declared, typed capabilities.

An adapter wraps a method behind up to four capabilities. Each capability is a contract, a
:class:`typing.Protocol` below whose docstrings define inputs and outputs exactly; suites and
metrics name them by the short names of :data:`CONTRACTS`:

* ``tokenize``  -- :class:`Tokenizer`: ``encode``, ``decode``, ``codebook_sizes``
* ``generate``  -- :class:`Sampler`: ``sample(n, cond, steps, seed)``; the NFE is *measured*
  (:func:`count_nfe` / :func:`counted`, read by :class:`NFEMeter`), never taken on trust
* ``prior``     -- :class:`Likelihood`: ``nll(images, labels) -> NLL`` in nats per sequence,
  optionally per position (an AR prior and a diffusion ELBO both fit)
* ``finetune``  -- :class:`Finetuner`: ``finetune(...) -> FinetuneResult``

:func:`bench.registry.register_adapter` refuses an adapter that declares a capability without
overriding its methods (:func:`check_capabilities`); a suite that asks a metric of an adapter
lacking the capability the metric ``requires`` is rejected at validation time.

Each adapter declares a pydantic ``Params`` model (like a peft config dataclass): suites
are validated against it, so an unknown or out-of-range parameter is an error naming its field.
"""
from __future__ import annotations

import contextvars
import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict

from bench.errors import BenchError

if TYPE_CHECKING:  # torch is imported where it is used, so schema checks (`bench validate`) stay light
    import torch

    from bench.context import CellContext


class AdapterParams(BaseModel):
    """Base for adapter parameter models: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class FinetuneResult:
    """What :meth:`Finetuner.finetune` returns: the adapted model and its cost record.

    Units: parameters as counts, sizes in bytes, times in seconds, memory in bytes, FLOPs as counts.
    """

    model: Any
    trainable_params: int
    adapter_layers: list[int]
    adapter_bytes: int
    median_step_s: float
    total_train_s: float
    peak_memory_bytes: int
    train_flops: float
    extra: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Conditioning:
    """What :meth:`Sampler.sample` conditions on.

    ``labels``: int64 [n], class ids in [0, num_classes), or None (unconditional);
    ``extra``: method-specific conditioning (e.g. a guidance scale), JSON-serialisable values.
    """

    labels: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, cond: "Conditioning | torch.Tensor | None") -> "Conditioning":
        """``cond`` as a :class:`Conditioning` (a bare int64 [n] tensor is taken as ``labels``)."""
        import torch

        if isinstance(cond, Conditioning):
            return cond
        if cond is None or isinstance(cond, torch.Tensor):
            return cls(labels=cond)
        raise TypeError(f"expected Conditioning, int64 labels [n] or None, got {type(cond).__name__}")


@dataclass
class NLL:
    """What :meth:`Likelihood.nll` returns, in nats.

    ``per_sequence``: float32 [B], -log p(x_b | y_b) of each image's representation (an AR prior:
    the sum over token positions; a diffusion model: the negative ELBO). ``per_position``: float32
    [B, L], its terms per position (summing to ``per_sequence``), or None where the model has none.
    """

    per_sequence: torch.Tensor
    per_position: torch.Tensor | None = None

    @classmethod
    def from_positions(cls, per_position: torch.Tensor) -> "NLL":
        """An NLL whose per-sequence values are the sums of ``per_position`` [B, L] over positions."""
        return cls(per_position.sum(1), per_position)


# --- NFE measurement ------------------------------------------------------------------------------

_METER: contextvars.ContextVar["NFEMeter | None"] = contextvars.ContextVar("bench_nfe_meter", default=None)


def count_nfe(batch: int) -> None:
    """Report one network evaluation over ``batch`` images (call it once per denoiser / prior forward).

    A no-op unless a :class:`NFEMeter` is open, so adapters call it unconditionally.
    """
    m = _METER.get()
    if m is not None:
        m.evaluations += int(batch)
        m.calls += 1


def counted(fn: Callable) -> Callable:
    """Wrap a network (``nn.Module`` or function) whose first argument is a batch [b, ...]: each
    call counts one evaluation over b images (:func:`count_nfe`)."""

    @functools.wraps(fn)
    def wrapper(x, *args, **kwargs):
        count_nfe(len(x))
        return fn(x, *args, **kwargs)

    return wrapper


class NFEMeter:
    """Counts the network evaluations the code inside ``with NFEMeter() as m:`` reports.

    ``m.evaluations``: image-evaluations (sum of the batch sizes given to :func:`count_nfe`);
    ``m.calls``: forward calls; :meth:`per_image` = evaluations / n, the measured NFE of n images.
    """

    def __init__(self) -> None:
        self.evaluations = 0
        self.calls = 0
        self._token: contextvars.Token | None = None

    def __enter__(self) -> "NFEMeter":
        self._token = _METER.set(self)
        return self

    def __exit__(self, *exc) -> None:
        _METER.reset(self._token)

    def per_image(self, n: int) -> float:
        return self.evaluations / max(int(n), 1)


# --- the capability contracts ---------------------------------------------------------------------

@runtime_checkable
class Tokenizer(Protocol):
    """``tokenize``: images <-> discrete token sequences of fixed length L.

    Optional member: ``code_vectors(tokens int64 [B, k]) -> float32 [B, k, d]``, the embedding of
    each token (the ``probe`` metric's ``features: codes`` needs it and says so otherwise).
    """

    @property
    def codebook_sizes(self) -> list[int]:
        """K_t >= 2 for each token position t = 0..L-1 of :meth:`encode`'s output (length L)."""
        ...

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images [B, C, H, W] in [0, 255] (CPU) -> int64 tokens [B, L], token t in [0, K_t).

        Deterministic; acts per image (batching changes nothing). ValueError on a wrong dtype/shape.
        """
        ...

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """int64 tokens [B, L] -> uint8 images [B, C, H, W] in [0, 255]; ValueError if L is wrong."""
        ...


@runtime_checkable
class Sampler(Protocol):
    """``generate``: draw images, optionally class-conditional, at a given number of steps."""

    def sample(self, n: int, cond: Conditioning, steps: int | None, seed: int) -> torch.Tensor:
        """Draw ``n`` >= 1 images: uint8 [n, C, H, W] in [0, 255].

        ``cond``: :class:`Conditioning` (``labels`` int64 [n] or None; a bare labels tensor is
        accepted too, :meth:`Conditioning.of`). ``steps``: the network evaluations per image to
        spend (NFE), or None for the method's default; a value the method cannot honour is a
        ValueError naming the accepted ones (an AR prior takes exactly L). ``seed``: the result is a
        deterministic function of (weights, n, cond, steps, seed).

        Every network evaluation is reported with :func:`count_nfe` (or by calling the network
        through :func:`counted`): one forward over b images counts b; an AR prior counts one per
        token position. The harness measures the NFE this way (:class:`NFEMeter`).
        """
        ...


@runtime_checkable
class Likelihood(Protocol):
    """``prior``: the likelihood a generative model assigns to images (in its representation)."""

    def nll(self, images: torch.Tensor, labels: torch.Tensor) -> NLL:
        """uint8 images [B, C, H, W], int64 labels [B] -> :class:`NLL` (nats; per sequence [B],
        per position [B, L] or None). Deterministic, no gradients."""
        ...


@runtime_checkable
class Finetuner(Protocol):
    """``finetune``: adapt a base model to a task and report the cost.

    After ``prepare`` the adapter holds ``result`` (the cell's :class:`FinetuneResult`) and
    ``tokenizer`` (the base model's text tokenizer, which lm-eval uses with ``result.model``).
    """

    result: FinetuneResult | None

    def finetune(self, base_model: Any, task: Any, budget: Any, seed: int) -> FinetuneResult:
        """Adapt ``base_model`` to ``task.train`` within ``budget`` (a dict or the adapter's Budget)
        with torch seeded by ``seed``; return the model (eval mode) and its cost record."""
        ...


CAPABILITIES = ("tokenize", "generate", "prior", "finetune")
CONTRACTS: dict[str, tuple[type, tuple[str, ...]]] = {
    "tokenize": (Tokenizer, ("encode", "decode", "codebook_sizes")),
    "generate": (Sampler, ("sample",)),
    "prior": (Likelihood, ("nll",)),
    "finetune": (Finetuner, ("finetune",)),
}
"""Capability name -> (its contract, the members an adapter declaring it must implement)."""


class Adapter:
    """Base class of all method adapters.

    Subclasses set ``capabilities`` (a subset of :data:`CAPABILITIES`), ``Params`` and implement
    :meth:`prepare` (train or load whatever the method needs, using ``ctx.cache`` so a rerun
    loads instead of retraining) and the members of their capabilities' contracts (the bodies
    here raise NotImplementedError; registration checks that they were overridden).
    """

    capabilities: ClassVar[frozenset[str]] = frozenset()
    Params: ClassVar[type[AdapterParams]] = AdapterParams
    registry_name: ClassVar[str] = "?"

    def __init__(self, params: AdapterParams, seed: int):
        self.params = params
        self.seed = seed

    # -- lifecycle -------------------------------------------------------------------------
    def prepare(self, ctx: "CellContext") -> None:
        """Train (or load from cache) everything the adapter needs for its capabilities."""
        raise NotImplementedError

    def config_for_hash(self) -> dict:
        """The parts of this adapter's configuration that determine its trained weights."""
        return {"adapter": self.registry_name, "params": self.params.model_dump(mode="json")}

    # -- tokenize: Tokenizer -----------------------------------------------------------------
    @property
    def codebook_sizes(self) -> list[int]:
        """See :attr:`Tokenizer.codebook_sizes`."""
        raise NotImplementedError

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """See :meth:`Tokenizer.encode`."""
        raise NotImplementedError

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """See :meth:`Tokenizer.decode`."""
        raise NotImplementedError

    # -- generate: Sampler -------------------------------------------------------------------
    def sample(self, n: int, cond: Conditioning, steps: int | None, seed: int) -> torch.Tensor:
        """See :meth:`Sampler.sample`."""
        raise NotImplementedError

    # -- prior: Likelihood -------------------------------------------------------------------
    def nll(self, images: torch.Tensor, labels: torch.Tensor) -> NLL:
        """See :meth:`Likelihood.nll`."""
        raise NotImplementedError

    # -- finetune: Finetuner -----------------------------------------------------------------
    def finetune(self, base_model: Any, task: Any, budget: Any, seed: int) -> FinetuneResult:
        """See :meth:`Finetuner.finetune`."""
        raise NotImplementedError


def check_capabilities(cls: type) -> None:
    """Raise :class:`BenchError` unless ``cls`` implements every member of each declared capability."""
    caps = set(getattr(cls, "capabilities", ()))
    unknown = sorted(caps - set(CAPABILITIES))
    if unknown:
        raise BenchError(f"adapter {cls.__name__}: unknown capabilities {unknown}; known: {list(CAPABILITIES)}")
    for cap in sorted(caps):
        contract, members = CONTRACTS[cap]
        missing = [m for m in members if getattr(cls, m, None) is getattr(Adapter, m, None)]
        if missing:
            raise BenchError(f"adapter {cls.__name__} declares capability {cap!r} but does not implement "
                             f"{', '.join(missing)} of the {contract.__name__} contract (bench.adapter)")


def check_image_batch(images: torch.Tensor, channels: int, size: int, where: str) -> None:
    """Raise ValueError unless ``images`` is uint8 [B, channels, size, size]."""
    import torch

    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        got = f"{getattr(images, 'dtype', type(images))} {tuple(getattr(images, 'shape', ()))}"
        raise ValueError(f"{where}: expected uint8 images [B, {channels}, {size}, {size}], got {got}")
    if tuple(images.shape[1:]) != (channels, size, size):
        raise ValueError(
            f"{where}: expected images of shape [B, {channels}, {size}, {size}], got {tuple(images.shape)}"
        )
