"""``wartok``: wAR-Tok, "Learning Discrete Autoregressive Priors with Wasserstein Gradient Flow" (arXiv 2605.06148).

What the paper states (abstract): two-stage training leaves *prior consistency* (the aggregate
token distribution q(z) = E_x q(z|x) matching the AR prior p(z)) outside the tokenizer objective.
wAR-Tok keeps the reconstruction objective unchanged and adds a distribution-level prior-matching
signal, optimised with a Wasserstein-gradient-flow (WGF) update which, for hard categorical tokens,
is a token-level contrast between an auxiliary AR model that tracks the tokenizer's *current*
token distribution and a *target* AR prior, using forward passes only (no backpropagation through
either AR model). The final AR prior is then fitted from scratch on the frozen tokens, as in the
baseline. Everything below that the accessible text does not state is a reconstruction
(``shared/methods/wartok.md``) and is a :class:`WARTokParams` field (logged with the run's params):

- **Surrogate** (reconstructed). With D = KL(q || p_theta) the WGF potential of a sequence is
  log q(z) - log p_theta(z) = sum_t [log q(z_t | z_<t) - log p_theta(z_t | z_<t)] (AR factorisation).
  Per token: delta_t(k) = log q_phi(k | z_<t) - log p_theta(k | z_<t) for every code k, computed under
  ``torch.no_grad`` from one teacher-forced forward pass of each AR on the current hard tokens z.
  Loss term: lambda * mean_{b,t} sum_k pi(k | x_b, t) * delta_t(k), with the encoder's soft
  assignment pi = softmax(cos(z_t, e_k) / ``tau``); the gradient reaches only the encoder and the
  codebook (through pi). Centring delta over k changes nothing (the gradient of sum_k pi_k c is 0),
  so there is no centring option. The effect of z_t on later conditionals is ignored (per-token).
- ``lam``: lambda. ``lam = 0`` *is* the two-stage ``vq`` baseline: same code path, same RNG
  stream and the same tokenizer cache key, so the tokenizer is bit-for-bit vq's.
- ``warm_start_frac``: the first fraction of tokenizer steps is reconstruction only (identical to vq's
  trajectory); the joint phase starts after it.
- ``target``: how p_theta is obtained. ``frozen`` (T1, default; a hint from the same author's
  code, ``fixed_ar_model``): an AR fitted for ``target_fit_steps`` on the warm-start tokenizer's
  tokens, then frozen. ``ema`` (T2): starts as T1, then follows q_phi as an EMA (``ema_decay``).
  ``small`` (T3): a smaller AR (``target_prior``) trained by CE on the current tokens like q_phi.
- The auxiliary (tracking) AR q_phi (``aux_prior``): initialised as a copy of the fitted target
  (``frozen``/``ema``; so delta = 0 when the joint phase starts) or fitted like it (``small``), then
  ``aux_steps`` AdamW CE steps (``aux_lr``) per tokenizer step on the batch's detached tokens.
  Both auxiliary ARs are unconditional (null class): prior consistency concerns the aggregate q(z).
- The TVC view (logged every ``tvc_every`` tokenizer steps, next to ``tokenizer_rec_loss``):
  ``wartok_tvc_kl`` = mean over tokens of delta at the realised token, a per-token estimate of
  KL(q || p_theta) (the prior-consistency gap); ``wartok_tracker_ce`` / ``wartok_target_ce`` (CE of
  q_phi / p_theta on the current tokens); ``wartok_wgf_loss`` (the surrogate). With
  ``fresh_prior_checks`` > 0 an AR is also fitted from scratch (``fresh_prior_steps``) on the current
  tokens of ``target_fit_images`` train images at that many evenly spaced points, and its CE on
  held-out *train* images is logged as ``wartok_fresh_prior_ce`` (never the test split).
"""
from __future__ import annotations

import copy
import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from adapters.tokenizers.vq_tokenizer import VQTokenizer, train_tokenizer
from adapters.tokenizers.vq import TokenizerARBudget, VQAdapter, VQParams
from adapters.tokenizers.ar_prior import ARPrior, PriorBudget, PriorConfig, train_prior
from bench.context import CellContext
from bench.data.base import ImageDataset
from bench.registry import register_adapter
from bench.training import Update
from adapters.tokenizers.params import WARTokParams  # noqa: F401  (declared in the light module)

WARTOK_FIELDS = ("lam", "target", "tau", "warm_start_frac", "aux_prior", "target_prior", "aux_lr", "aux_steps",
                 "target_fit_steps", "target_fit_images", "ema_decay", "fresh_prior_checks", "fresh_prior_steps")


def soft_assignment(tok: VQTokenizer, z: torch.Tensor, tau: float) -> torch.Tensor:
    """pi(k | x, t) = softmax_k(cos(z_t, e_k) / tau), float [B, L, K_max] (0 on forbidden codes)."""
    return torch.softmax(tok.similarity(z) / tau, dim=-1)


def wgf_contrast(tracker: ARPrior, target: ARPrior, codes: torch.Tensor) -> torch.Tensor:
    """delta_t(k) = log q_phi(k | z_<t) - log p_theta(k | z_<t), float [B, L, K]; forward passes only.

    Computed under ``torch.no_grad`` from the hard tokens ``codes`` [B, L] (detached): the result
    carries no graph, so nothing ever backpropagates into either AR model. Entries outside a
    position's allowed codes are 0.
    """
    with torch.no_grad():
        labels = torch.full((len(codes),), tracker.null_class, dtype=torch.long)
        z = codes.detach()
        lq = tracker.log_probs(z, labels, masked=True)
        lp = target.log_probs(z, labels, masked=True)
        allowed = tracker.allowed & target.allowed
        return torch.where(allowed, lq - lp, torch.zeros_like(lq))


def wgf_loss(tok: VQTokenizer, z: torch.Tensor, codes: torch.Tensor, tracker: ARPrior, target: ARPrior,
             tau: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The WGF surrogate mean_{b,t} sum_k pi(k|x,t) * sg[delta_t(k)] and delta (detached).

    Gradient flows only through the soft assignment pi (encoder latents ``z`` and the codebook).
    """
    delta = wgf_contrast(tracker, target, codes)
    pi = soft_assignment(tok, z, tau)
    return (pi * delta).sum(-1).mean(), delta


def _ce_step(model: ARPrior, opt: torch.optim.Optimizer, codes: torch.Tensor, what: str = "wAR-Tok auxiliary AR",
             step: int = 0) -> float:
    """One clipped AdamW CE step of ``model`` on the detached ``codes`` [B, L] (null class); its CE (nats/token)."""
    labels = torch.full((len(codes),), model.null_class, dtype=torch.long)
    logits = model.logits(codes, labels, masked=model.cfg.mask_logits_in_training)
    loss = F.cross_entropy(logits.reshape(-1, model.vocab).float(), codes.reshape(-1))
    # zero_grad_after: grads never linger into the tokenizer's step
    return Update(opt, clip=1.0, params=model.parameters(), what=what).step(loss, step, zero_grad_after=True)


class WGFTrainer:
    """The ``extra_loss`` hook of :func:`train_tokenizer`: owns q_phi, p_theta and the TVC log.

    Called once per tokenizer step with the batch's latents and hard codes; returns
    lambda * L_wgf (or None during the warm start) and then updates the auxiliary ARs on the
    detached codes. All its randomness runs inside a forked RNG, so the tokenizer's stream is
    untouched.
    """

    def __init__(self, params: WARTokParams, images: torch.Tensor, num_classes: int, steps: int, batch_size: int,
                 seed: int, log=None, show_progress: bool = False):
        self.p, self.images, self.num_classes = params, images, num_classes
        self.steps, self.batch_size, self.seed = steps, batch_size, seed
        self.warm_steps = int(round(params.warm_start_frac * steps))
        self.log = log or (lambda k, v, s=None: None)
        self.show_progress = show_progress
        self.tracker: ARPrior | None = None
        self.target: ARPrior | None = None
        self.history: dict[str, list[tuple[int, float]]] = {}
        checks = params.fresh_prior_checks
        span = steps - self.warm_steps
        self.fresh_at = sorted({self.warm_steps + int(round(span * (i + 1) / checks)) - 1 for i in range(checks)}) \
            if checks and span > 0 else []

    # -- bookkeeping ---------------------------------------------------------------------------
    def record(self, key: str, value: float, step: int) -> None:
        self.history.setdefault(key, []).append((int(step), float(value)))
        if math.isfinite(value):
            self.log(key, float(value), int(step))

    def _new_ar(self, cfg: PriorConfig, tok: VQTokenizer) -> ARPrior:
        sizes = tok.codebook_sizes
        allowed = torch.arange(tok.k_max)[None, :] < torch.tensor(sizes)[:, None]
        return ARPrior(tok.k_max, len(sizes), self.num_classes, cfg, allowed).to(tok.device)

    def _current_tokens(self, tok: VQTokenizer) -> torch.Tensor:
        return tok.encode(self.images[: self.p.target_fit_images])

    def _fit(self, model: ARPrior, tokens: torch.Tensor, steps: int, what: str) -> None:
        labels = torch.full((len(tokens),), model.null_class, dtype=torch.long)
        if steps > 0:
            train_prior(model, tokens, labels, PriorBudget(steps, self.batch_size, self.p.aux_lr, 0.0,
                                                           warmup=min(50, steps // 5 + 1)),
                        self.seed, what, None, self.show_progress)
        model.zero_grad(set_to_none=True)  # no fitting gradient lingers on an auxiliary AR
        model.eval()

    def _adamw(self, model: ARPrior) -> torch.optim.Optimizer:
        return torch.optim.AdamW(model.parameters(), lr=self.p.aux_lr, betas=(0.9, 0.95), weight_decay=0.01)

    # -- phases --------------------------------------------------------------------------------
    def start_joint_phase(self, tok: VQTokenizer) -> None:
        """Fit the target on the warm-start tokens and initialise the tracker (step = warm_steps)."""
        torch.manual_seed(self.seed + 7919)
        tokens = self._current_tokens(tok)
        if self.p.target == "small":
            self.target = self._new_ar(self.p.target_prior, tok)
            self._fit(self.target, tokens, self.p.target_fit_steps, "wAR-Tok target AR")
            self.tracker = self._new_ar(self.p.aux_prior, tok)
            self._fit(self.tracker, tokens, self.p.target_fit_steps, "wAR-Tok tracking AR")
            self.target_opt = self._adamw(self.target)
        else:
            self.target = self._new_ar(self.p.aux_prior, tok)
            self._fit(self.target, tokens, self.p.target_fit_steps, "wAR-Tok target AR")
            self.tracker = copy.deepcopy(self.target)
            self.target_opt = None
        self.target.requires_grad_(self.p.target == "small")
        self.tracker_opt = self._adamw(self.tracker)

    def update_auxiliaries(self, codes: torch.Tensor, step: int = 0) -> float:
        """q_phi CE step(s) on the detached codes, then the target update (EMA / small CE)."""
        codes = codes.detach()
        self.tracker.train()
        ce = float("nan")
        for _ in range(self.p.aux_steps):
            ce = _ce_step(self.tracker, self.tracker_opt, codes, "wAR-Tok tracking AR", step)
        self.tracker.eval()
        if self.p.target == "ema":
            with torch.no_grad():
                for pt, pq in zip(self.target.parameters(), self.tracker.parameters()):
                    pt.lerp_(pq, 1.0 - self.p.ema_decay)
        elif self.p.target == "small":
            self.target.train()
            _ce_step(self.target, self.target_opt, codes, "wAR-Tok target AR", step)
            self.target.eval()
        return ce

    def fresh_prior_ce(self, tok: VQTokenizer, step: int) -> None:
        """Fit an AR from scratch on current train tokens; log its CE on held-out train images."""
        torch.manual_seed(self.seed + 104729)
        tokens = self._current_tokens(tok)
        n_hold = max(1, len(tokens) // 10)
        fit, held = tokens[:-n_hold], tokens[-n_hold:]
        model = self._new_ar(self.p.aux_prior, tok)
        self._fit(model, fit, self.p.fresh_prior_steps, "wAR-Tok fresh AR")
        with torch.no_grad():
            labels = torch.full((len(held),), model.null_class, dtype=torch.long)
            ce = float(model.nll(held, labels).mean())
        self.record("wartok_fresh_prior_ce", ce, step)

    # -- the hook ------------------------------------------------------------------------------
    def __call__(self, tok: VQTokenizer, x: torch.Tensor, z: torch.Tensor, codes: torch.Tensor, step: int):
        if step < self.warm_steps:
            return None
        with torch.random.fork_rng(devices=[]):
            if self.tracker is None:
                self.start_joint_phase(tok)
            loss, delta = wgf_loss(tok, z, codes, self.tracker, self.target, self.p.tau)
            if step % self.p.tvc_every == 0 or step == self.warm_steps:
                with torch.no_grad():
                    realised = delta.gather(-1, codes.unsqueeze(-1)).squeeze(-1)
                    labels = torch.full((len(codes),), self.tracker.null_class, dtype=torch.long)
                    self.record("wartok_tvc_kl", float(realised.mean()), step)
                    self.record("wartok_tracker_ce", float(self.tracker.nll(codes, labels).mean()), step)
                    self.record("wartok_target_ce", float(self.target.nll(codes, labels).mean()), step)
                    self.record("wartok_wgf_loss", float(loss.detach()), step)
            self.update_auxiliaries(codes, step)
            if step in self.fresh_at:
                self.fresh_prior_ce(tok, step)
        return self.p.lam * loss


@register_adapter("wartok")
class WARTokAdapter(VQAdapter):
    """wAR-Tok: VQ tokenizer trained with reconstruction + lambda * WGF prior matching (arXiv 2605.06148)."""

    Params = WARTokParams

    def tokenizer_extra_key(self) -> dict:
        if self.params.lam == 0:
            return {}  # lambda = 0 is the vq baseline: same key, same cached tokenizer
        return {"wartok": self.params.model_dump(mode="json", include=set(WARTOK_FIELDS) | {"tvc_every"})}

    def train_new_tokenizer(self, ctx: CellContext, ds: ImageDataset, budget: TokenizerARBudget):
        self._trained_now = True
        if self.params.lam == 0:
            return super().train_new_tokenizer(ctx, ds, budget)  # exactly the vq code path
        ctx.log_param("wartok.warm_steps", int(round(self.params.warm_start_frac * budget.tokenizer_steps)))
        tok = self.new_tokenizer()
        rec_hist: list[tuple[int, float]] = []

        def log(key, value, step=None):
            if key == "tokenizer_rec_loss" and step is not None:
                rec_hist.append((int(step), float(value)))
            ctx.log_metric(key, value, step)

        hook = WGFTrainer(self.params, ds.train.images, ds.num_classes, budget.tokenizer_steps,
                          budget.tokenizer_batch, self.seed, ctx.log_metric, False)
        stats = train_tokenizer(tok, ds.train.images, budget.tokenizer_steps, budget.tokenizer_batch,
                                budget.tokenizer_lr, self.seed, "tokenizer", log, ctx.progress,
                                extra_loss=hook)
        history = {**hook.history, "tokenizer_rec_loss": rec_hist}
        key = self.tokenizer_key(ds, budget)
        ctx.cache.save_torch("wartok_tvc", key, {k: torch.tensor(v, dtype=torch.float64) for k, v in history.items()
                                                 if v})
        self._plot_tvc(ctx, history)
        return tok, stats

    def load_or_train_tokenizer(self, ctx: CellContext, ds: ImageDataset, budget: TokenizerARBudget) -> VQTokenizer:
        self._trained_now = False
        tok = super().load_or_train_tokenizer(ctx, ds, budget)
        if self.params.lam > 0 and not self._trained_now:  # cached: re-log the TVC view of its training
            hist = ctx.cache.load_torch("wartok_tvc", self.tokenizer_key(ds, budget)) or {}
            history = {k: [(int(s), float(v)) for s, v in t.tolist()] for k, t in hist.items()}
            for k, pts in history.items():
                for s, v in pts:
                    if math.isfinite(v):
                        ctx.log_metric(k, v, s)
            self._plot_tvc(ctx, history)
        return tok

    @staticmethod
    def _plot_tvc(ctx: CellContext, history: dict) -> None:
        """tvc.png: reconstruction loss and the prior-consistency gap over tokenizer training."""
        if not history.get("wartok_tvc_kl"):
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
        for k in ("tokenizer_rec_loss",):
            if history.get(k):
                s, v = zip(*history[k])
                ax[0].plot(s, v, label=k)
        ax[0].set_xlabel("tokenizer step")
        ax[0].set_title("(i) reconstruction")
        ax[0].legend(fontsize=7)
        for k in ("wartok_tvc_kl", "wartok_tracker_ce", "wartok_target_ce", "wartok_fresh_prior_ce"):
            if history.get(k):
                s, v = zip(*history[k])
                ax[1].plot(s, v, label=k, marker="o" if k == "wartok_fresh_prior_ce" else None)
        ax[1].set_xlabel("tokenizer step")
        ax[1].set_title("(ii) prior consistency [nats/token]")
        ax[1].legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(ctx.artifact_dir / "tvc.png", dpi=100)
        plt.close(fig)
