"""``vq``: the uniform-codebook VQ tokenizer + class-conditional AR prior (the VCQ paper's baseline).

Every position uses one codebook of size K (``codebook_size``). Tokenizer: see
:mod:`adapters.tokenizers.vq_tokenizer`; prior: :mod:`adapters.tokenizers.ar_prior`. Two-stage training: (1) train the
tokenizer on reconstruction, (2) freeze it and tokenize the train split, (3) train the AR prior
from scratch on the frozen tokens. Trained weights are cached by a hash of everything that
determines them (config, budget, data fingerprint, seed), so a rerun loads instead of training.
"""
from __future__ import annotations

import math

import torch
from pydantic import BaseModel, ConfigDict, Field

from adapters.tokenizers.vq_tokenizer import TokenizerConfig, VQTokenizer, train_tokenizer
from adapters.tokenizers.raster_tokenizer import make_tokenizer
from bench import HARNESS_VERSION
from bench.adapter import NLL, Adapter, AdapterParams, Conditioning, check_image_batch
from adapters.tokenizers.ar_prior import ARPrior, PriorBudget, PriorConfig, train_prior
from bench.code_identity import CACHE_FIELD, identity, stale_weights
from bench.context import CellContext, stable_hash
from bench.data.base import ImageDataset
from bench.errors import BenchError
from bench.registry import register_adapter
from adapters.tokenizers.params import TokenizerARBudget, VQParams  # noqa: F401  (declared in the light module)


TRAIN_LOCK_TIMEOUT_S = 6 * 3600.0  # a cell waiting for another cell's tokenizer training (hours on a GPU suite)


def code_usage_perplexity(tokens: torch.Tensor, k: int) -> float:
    """exp(entropy) of the marginal code histogram (all positions pooled): effective codebook size."""
    p = torch.bincount(tokens.flatten(), minlength=k).double()
    p = p[p > 0] / p.sum()
    return float(torch.exp(-(p * p.log()).sum()))


@register_adapter("vq")
class VQAdapter(Adapter):
    """Uniform-codebook VQ tokenizer (codebook size K at every position) with an AR prior."""

    capabilities = frozenset({"tokenize", "generate", "prior"})
    Params = VQParams
    Budget = TokenizerARBudget
    code_modules = ("adapters.tokenizers.vq_tokenizer", "adapters.tokenizers.raster_tokenizer",
                    "adapters.tokenizers.ar_prior", "adapters.tokenizers.params")
    """Modules whose source is part of this family's code identity (:mod:`bench.code_identity`)."""
    # A subclass sets ``reuses_weights_of = VQAdapter`` (a class) when its tokenizer is the parent's
    # recipe given the key's parts (its schedule, :meth:`tokenizer_extra_key`): see :meth:`weights_owner`.

    # -- the one thing VCQ changes ----------------------------------------------------------
    def schedule(self) -> list[int]:
        """K_t for t = 1..L."""
        return [self.params.codebook_size] * self.params.tokenizer.length

    # -- lifecycle --------------------------------------------------------------------------
    def bind(self, ctx: CellContext) -> ImageDataset:
        """Check the cell's data set is an image data set and take its shape and the device from it."""
        ds = ctx.dataset
        if not isinstance(ds, ImageDataset):
            raise BenchError(f"adapter {self.registry_name!r} needs an image data set, got {type(ds).__name__}")
        self.num_classes, self.channels, self.resolution = ds.num_classes, ds.channels, ds.resolution
        self.device = ctx.device
        return ds

    def prepare(self, ctx: CellContext) -> None:
        ds = self.bind(ctx)
        budget = TokenizerARBudget.model_validate(ctx.budget)
        self.tokenizer = self.load_or_train_tokenizer(ctx, ds, budget)
        self.train_tokens = self._train_tokens
        self.train_images = ds.train.images  # train_tokens are their tokens (train_prefix_tokens)
        n_prior = budget.prior_train_images or len(ds.train)
        self.prior = self.load_or_train_prior(ctx, ds, budget, self.train_tokens[:n_prior], ds.train.labels[:n_prior])
        ctx.log_param("codebook_sizes", self.codebook_sizes)
        ctx.log_metric("code_usage_perplexity", code_usage_perplexity(self.train_tokens, max(self.codebook_sizes)))

    def train_prefix_tokens(self, images: torch.Tensor) -> torch.Tensor | None:
        """``train_tokens[:n]`` (int64 [n, L]) when ``images`` are the first n train images, else None.

        "The first n train images" means the very tensor ``prepare`` tokenized, or a leading slice of
        it (what ``ctx.dataset.train.head(n)`` hands out: same storage, offset and strides). Those
        tokens were made by the frozen tokenizer in the same chunks, so this is exact, and metrics on
        train images (the entropy curve over all 60k, the probe's fit set) do not encode them again.
        """
        ref, tokens = getattr(self, "train_images", None), getattr(self, "train_tokens", None)
        if ref is None or tokens is None or len(tokens) != len(ref):
            return None
        same = (images.device == ref.device and images.dtype == ref.dtype and images.shape[1:] == ref.shape[1:]
                and images.stride() == ref.stride() and len(images) <= len(ref) and images.data_ptr() == ref.data_ptr())
        return tokens[:len(images)].clone() if same else None

    @classmethod
    def weights_owner(cls) -> type:
        """The class whose code trains this class's tokenizer: ``cls`` itself, unless it declares
        ``reuses_weights_of = Parent`` in its own body (then the parent's owner; not inherited, so a
        subclass of a declaring class is its own owner again)."""
        c = cls
        while "reuses_weights_of" in c.__dict__:
            c = c.__dict__["reuses_weights_of"]
        return c

    @classmethod
    def weights_class_key(cls) -> dict:
        """The tokenizer key's class part: ``{"class": "module:Qualname"}`` of :meth:`weights_owner`,
        empty for vq itself and for an owner that builds its own key (overrides ``tokenizer_key`` or
        :meth:`tokenizer_extra_key`, as wartok does), so those keys predate this part unchanged.
        A subclass that only overrides, say, the tokenizer's training gets its own cached weights."""
        owner = cls.weights_owner()
        if owner is VQAdapter or {"tokenizer_key", "tokenizer_extra_key"} & set(owner.__dict__):
            return {}
        return {"class": f"{owner.__module__}:{owner.__qualname__}"}

    def tokenizer_key(self, ds: ImageDataset, budget: TokenizerARBudget) -> str:
        return stable_hash({
            "v": HARNESS_VERSION, "kind": "vq_tokenizer", "sizes": self.schedule(),
            "cfg": self.params.tokenizer.model_dump(), "data": ds.train.fingerprint(), "seed": self.seed,
            "budget": {k: v for k, v in budget.model_dump().items() if k.startswith("tokenizer")},
            "extra": self.tokenizer_extra_key(), **self.weights_class_key(),
        })

    def tokenizer_extra_key(self) -> dict:
        """Anything beyond the shared recipe that changes the tokenizer's weights (subclasses)."""
        return {}

    def new_quantiser(self):
        """The tokenizer's quantiser component (:class:`adapters.tokenizers.vq_tokenizer.Quantiser`,
        e.g. FSQ), built after the seed is set; None: vq's cosine codebook. Its ``codebook_sizes``
        must be :meth:`schedule`'s, so a subclass returning one overrides ``schedule`` too."""
        return None

    def new_tokenizer(self) -> VQTokenizer:
        torch.manual_seed(self.seed)
        tok = make_tokenizer(self.params.tokenizer, self.schedule(), self.channels, self.resolution,
                             self.new_quantiser())
        return tok.to(self.device)

    def train_new_tokenizer(self, ctx: CellContext, ds: ImageDataset, budget: TokenizerARBudget) -> tuple[VQTokenizer, dict]:
        tok = self.new_tokenizer()
        stats = train_tokenizer(tok, ds.train.images, budget.tokenizer_steps, budget.tokenizer_batch,
                                budget.tokenizer_lr, self.seed, "tokenizer", ctx.log_metric, ctx.progress)
        return tok, stats

    def load_or_train_tokenizer(self, ctx: CellContext, ds: ImageDataset, budget: TokenizerARBudget) -> VQTokenizer:
        """The tokenizer of :meth:`tokenizer_key` from the cache, else trained and cached.

        Every method that freezes the same tokenizer (same key: schedule, config, data, seed,
        tokenizer budget) shares one training: concurrent cells (a worker pool) wait on a per-key
        file lock instead of training it twice (a dead worker's lock is released by the OS).
        """
        from bench.locks import file_lock

        key = self.tokenizer_key(ds, budget)
        ctx.log_param("tokenizer_cache_key", key)
        owner = type(self).weights_owner()
        with file_lock(ctx.cache.path("tokenizer", key).with_suffix(".train.lock"), timeout=TRAIN_LOCK_TIMEOUT_S):
            cached = ctx.cache.load_torch("tokenizer", key)
            if cached is not None and not stale_weights(cached, owner, f"tokenizer {key}"):
                tok = self.new_tokenizer()
                tok.load_state_dict(cached["state"])  # tensors loaded to CPU, copied onto the module's device
                tok.eval()
                self._train_tokens = cached["train_tokens"]
                ctx.log_param("tokenizer_cached", True)
                return tok
            tok, stats = self.train_new_tokenizer(ctx, ds, budget)
            self._train_tokens = tok.encode(ds.train.images)
            ctx.cache.save_torch("tokenizer", key, {"state": tok.state_dict(), "train_tokens": self._train_tokens,
                                                    "stats": stats, CACHE_FIELD: identity(owner).fingerprint})
        for k, v in stats.items():
            if math.isfinite(v):
                ctx.log_metric(f"tokenizer_{k}", v)
        return tok

    def prior_layout(self) -> tuple[int, int, torch.Tensor]:
        """(vocabulary V, sequence length, allowed mask [L, V]) of the AR prior."""
        sizes = self.schedule()
        v = max(sizes)
        allowed = torch.arange(v)[None, :] < torch.tensor(sizes)[:, None]
        return v, len(sizes), allowed

    def prior_sequences(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokenizer tokens [B, L] -> the sequences the AR prior models (identity here)."""
        return tokens

    def prior_key_parts(self, ds: ImageDataset, budget: TokenizerARBudget) -> dict:
        """What the prior's training data depends on (part of its cache key)."""
        return {"kind": "ar_prior", "tok": self.tokenizer_key(ds, budget)}

    def load_or_train_prior(self, ctx, ds, budget, tokens, labels) -> ARPrior:
        """Train (or load from cache) a fresh AR prior on ``prior_sequences(tokens)`` with ``labels``.

        With ``final_ar_conditional: false`` every label is the null class (an unconditional prior).
        """
        vocab, length, allowed = self.prior_layout()
        uncond = {} if self.conditional_prior else {"conditional": False}
        key = stable_hash({"v": HARNESS_VERSION, **self.prior_key_parts(ds, budget), **uncond,
                           "cfg": self.params.prior.model_dump(), "n": len(tokens), "seed": self.seed,
                           "budget": {k: v for k, v in budget.model_dump().items()
                                      if k.startswith("prior") or k == "label_dropout"}})
        ctx.log_param("prior_cache_key", key)
        torch.manual_seed(self.seed)
        prior = ARPrior(vocab, length, ds.num_classes, self.params.prior, allowed).to(self.device)
        labels = self.prior_labels(labels, prior)
        cached = ctx.cache.load_torch("prior", key)
        if cached is not None and not stale_weights(cached, type(self), f"prior {key}"):
            prior.load_state_dict(cached["state"])
            prior.eval()
            return prior
        pb = PriorBudget(budget.prior_steps, budget.prior_batch, budget.prior_lr, budget.label_dropout,
                         eval_every=budget.prior_eval_every, patience=budget.prior_patience)
        seqs, val = self.prior_sequences(tokens), None
        if budget.prior_val_images:  # the last images' tokens are held out for validation / early stopping
            nv = budget.prior_val_images
            if nv >= len(seqs):
                raise BenchError(f"budget.prior_val_images ({nv}) must be < the prior's {len(seqs)} training images")
            seqs, labels, val = seqs[:-nv], labels[:-nv], (seqs[-nv:], labels[-nv:])
        stats = train_prior(prior, seqs, labels, pb, self.seed, "prior", ctx.log_metric, ctx.progress, val=val)
        ctx.cache.save_torch("prior", key, {"state": prior.state_dict(), "stats": stats,
                                            CACHE_FIELD: identity(type(self)).fingerprint})
        for k, v in stats.items():
            ctx.log_metric(f"prior_{k}", v)
        return prior

    @property
    def conditional_prior(self) -> bool:
        """``params.final_ar_conditional`` (True for a plugin's Params that lack the field)."""
        return getattr(self.params, "final_ar_conditional", True)

    def prior_labels(self, labels: torch.Tensor | None, prior: ARPrior | None = None) -> torch.Tensor | None:
        """The labels the prior sees: ``labels`` [B], or all null class when ``final_ar_conditional`` is false."""
        if self.conditional_prior or labels is None:
            return labels
        return torch.full_like(labels, (prior or self.prior).null_class)

    # -- tokenize ---------------------------------------------------------------------------
    @property
    def codebook_sizes(self) -> list[int]:
        return self.schedule()

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        check_image_batch(images, self.channels, self.resolution, f"{self.registry_name}.encode")
        cached = self.train_prefix_tokens(images)
        return cached if cached is not None else self.tokenizer.encode(images)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 2 or tokens.shape[1] != len(self.codebook_sizes):
            raise ValueError(f"{self.registry_name}.decode: expected tokens [B, {len(self.codebook_sizes)}], "
                             f"got {tuple(tokens.shape)}")
        return self.tokenizer.decode(tokens)

    def code_vectors(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens [B, L] -> their code vectors float [B, L, d] (probe features; l2-normalised for cosine VQ)."""
        with torch.no_grad():
            return self.tokenizer.code_vectors(tokens.to(self.device)).cpu()

    # -- generate / prior -------------------------------------------------------------------
    def sample(self, n: int, cond: Conditioning, steps: int | None, seed: int) -> torch.Tensor:
        """Class-conditional ancestral sampling, temperature ``params.temperature``, no guidance
        (labels ignored, null class, when ``final_ar_conditional`` is false).

        NFE = L (one prior forward per token); ``steps`` other than None or L is an error.
        """
        length = self.prior.length
        if steps not in (None, length):
            raise ValueError(f"{self.registry_name}.sample: an AR prior takes exactly L={length} steps, got {steps}")
        labels = self.prior_labels(Conditioning.of(cond).labels)
        if labels is None:
            labels = torch.full((n,), self.prior.null_class, dtype=torch.long)
        seqs = self.prior.sample(labels[:n], self.params.temperature, seed)
        return self.decode(self.tokens_from_sequences(seqs))

    def tokens_from_sequences(self, seqs: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`prior_sequences` (identity here)."""
        return seqs

    def nll(self, images: torch.Tensor, labels: torch.Tensor) -> NLL:
        """The ``prior`` capability: :meth:`prior_nll` per position, summed per sequence (nats)."""
        return NLL.from_positions(self.prior_nll(images, labels))

    def prior_nll(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-position NLL [B, L] (nats) of the images' tokens under the prior (masked as sampled)."""
        labels = self.prior_labels(labels)
        with torch.no_grad():
            seqs = self.prior_sequences(self.encode(images))
            return torch.cat([self.prior.nll(seqs[i:i + 1000], labels[i:i + 1000]).cpu()
                              for i in range(0, len(seqs), 1000)])
