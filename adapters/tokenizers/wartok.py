"""``wartok``: wAR-Tok, "Learning Discrete Autoregressive Priors with Wasserstein Gradient Flow" (arXiv 2605.06148).

What the paper states (abstract, [A] in ``docs/methods/wartok.md``): two-stage training leaves
*prior consistency* (the aggregate token distribution q(z) = E_x q(z|x) matching the AR prior p(z))
outside the tokenizer objective. wAR-Tok keeps the reconstruction objective unchanged and adds a
distribution-level prior-matching signal, optimised with a Wasserstein-gradient-flow (WGF) update
which, for hard categorical tokens, is a token-level contrast between an auxiliary AR model that
tracks the tokenizer's *current* token distribution and a *target* AR prior, using forward passes
only (no backpropagation through either AR model). The final AR prior is then fitted from scratch
on the frozen tokens, as in the baseline. Everything below that the accessible text does not state
is a reconstruction ([R] in the note) and is a :class:`WARTokParams` / :class:`WARTokBudget` field:

- **Start** (``init``). ``vq`` (default): the converged ``vq`` tokenizer, loaded from vq's cache
  entry (the *same* key vq computes, so one tokenizer training serves vq, every wAR-Tok variant and
  the lambda = 0 control; trained through vq's code path if not cached yet, its params and curves
  logged with a ``base_`` prefix), then fine-tuned for the budget's ``finetune_steps`` with
  L_rec + lambda * L_wgf (the note's "(0) optional warm start, (1) joint phase", with the warm start
  = vq's full training). ``scratch``: one training of ``tokenizer_steps``, the first
  ``warm_start_frac`` reconstruction only, then the joint phase.
- **Surrogate** [R]. With D = KL(q || p_theta) the WGF potential of a sequence is
  log q(z) - log p_theta(z) = sum_t [log q(z_t | z_<t) - log p_theta(z_t | z_<t)] (AR factorisation).
  Per token: delta_t(k) = log q_phi(k | z_<t) - log p_theta(k | z_<t) for every code k, computed under
  ``torch.no_grad`` from one teacher-forced forward pass of each AR on the current hard tokens z.
  Loss term: lambda * mean_{b,t} sum_k pi(k | x_b, t) * delta_t(k), with the encoder's soft
  assignment pi = softmax(cos(z_t, e_k) / ``tau``); the gradient reaches only the encoder and the
  codebook (through pi). Centring delta over k changes nothing (the gradient of sum_k pi_k c is 0),
  so there is no centring option. The effect of z_t on later conditionals is ignored (per-token).
- ``lam``: lambda. ``lam = 0`` is the **control**: the same loop (same steps, the auxiliary ARs
  trained, the surrogate computed and multiplied by 0), so the tokenizer equals a
  reconstruction-only fine-tune with the same seed bit for bit (all auxiliary randomness runs in a
  forked RNG); a gain of lambda > 0 over it is not "more tokenizer steps". ``control_diagnostics:
  false`` skips the auxiliaries at lambda = 0 (the same tokenizer, half the fine-tune's cost, no TVC
  curves of the control). A lambda sweep is
  several methods of one suite (``suites/fmnist_wartok.yaml``).
- ``target``: how p_theta is obtained. ``small`` (T3, default): a smaller AR (``target_prior``)
  fitted on the starting tokens, then trained by CE on the current tokens jointly with q_phi.
  ``ema`` (T2): starts as T1, then follows q_phi as an EMA (``ema_decay``). ``frozen`` (T1; a hint
  from the same author's code, ``fixed_ar_model``, [C]): an AR fitted for ``target_fit_steps`` on the
  starting tokens, then frozen -- it pulls the codes back towards the start, so it is not the default.
- The auxiliary (tracking) AR q_phi (``aux_prior``): initialised as a copy of the fitted target
  (``frozen``/``ema``; so delta = 0 when the joint phase starts) or fitted like it (``small``), then
  ``aux_steps`` AdamW CE steps (``aux_lr``) per tokenizer step on the batch's detached tokens.
  Both auxiliary ARs are unconditional (null class): prior consistency concerns the aggregate q(z).
- The TVC view (logged every ``tvc_every`` tokenizer steps of the joint phase, next to the
  reconstruction curve ``finetune_rec_loss`` / ``tokenizer_rec_loss``): ``wartok_tvc_kl`` = mean over
  tokens of delta at the realised token, a per-token estimate of KL(q || p_theta) (the
  prior-consistency gap); ``wartok_tracker_ce`` / ``wartok_target_ce`` (CE of q_phi / p_theta on the
  current tokens); ``wartok_wgf_loss`` (the surrogate). With ``fresh_prior_checks`` > 0 an AR is also
  fitted from scratch (``fresh_prior_steps``) on the current tokens of ``target_fit_images`` train
  images at that many evenly spaced points, and its CE on held-out *train* images is logged as
  ``wartok_fresh_prior_ce`` (never the test split).
- For the frontier (AR loss against reconstruction, :mod:`.wartok_frontier`): ``tokenizer_recon_mse``
  (MSE of the final tokenizer's uint8 reconstructions, pixels in [0, 1], first ``recon_images`` train
  images), ``base_tokenizer_recon_mse`` and ``base_code_usage_perplexity`` of the vq start, and
  ``code_usage_perplexity`` of the final tokens (as vq logs it).
"""
from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from adapters.tokenizers.vq_tokenizer import VQTokenizer, train_tokenizer
from adapters.tokenizers.vq import TokenizerARBudget, VQAdapter, VQParams, code_usage_perplexity
from adapters.tokenizers.ar_prior import ARPrior, PriorBudget, PriorConfig, train_prior
from bench import HARNESS_VERSION
from bench.context import CellContext, stable_hash
from bench.data.base import ImageDataset
from bench.registry import register_adapter
from bench.training import Update
from adapters.tokenizers.params import WARTokBudget, WARTokParams  # noqa: F401  (declared in the light module)

WARTOK_FIELDS = ("init", "lam", "target", "tau", "warm_start_frac", "aux_prior", "target_prior", "aux_lr", "aux_steps",
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
                 seed: int, log=None, show_progress: bool = False, warm_steps: int | None = None):
        self.p, self.images, self.num_classes = params, images, num_classes
        self.steps, self.batch_size, self.seed = steps, batch_size, seed
        # reconstruction-only steps before the joint phase (default: warm_start_frac; 0 for a fine-tune)
        self.warm_steps = int(round(params.warm_frac * steps)) if warm_steps is None else int(warm_steps)
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
        """Fit the target on the starting tokens and initialise the tracker (step = warm_steps)."""
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


def recon_mse(tok: VQTokenizer, images: torch.Tensor) -> float:
    """Mean squared error of ``tok``'s uint8 reconstructions of uint8 ``images`` [N, C, H, W], pixels in [0, 1]."""
    with torch.no_grad():
        rec = tok.decode(tok.encode(images))
        return float(((rec.double() - images.double()) / 255.0).pow(2).mean())


@register_adapter("wartok")
class WARTokAdapter(VQAdapter):
    """wAR-Tok: vq's tokenizer fine-tuned with reconstruction + lambda * WGF prior matching (arXiv 2605.06148)."""

    Params = WARTokParams
    Budget = WARTokBudget

    @classmethod
    def leaderboard_figures(cls, board, out_dir: Path) -> list[Path]:
        """``wartok_frontier.png``: AR loss against reconstruction MSE for every row (:mod:`.wartok_frontier`)."""
        from adapters.tokenizers.wartok_frontier import ar_loss_vs_recon

        return ar_loss_vs_recon(board, out_dir)

    # -- lifecycle -----------------------------------------------------------------------------
    def prepare(self, ctx: CellContext) -> None:
        """vq's prepare with vq's budget keys; the fine-tune keys are read here (``self.ft``)."""
        self.ft = WARTokBudget.model_validate(ctx.budget)
        own = set(WARTokBudget.model_fields) - set(TokenizerARBudget.model_fields)
        super().prepare(dataclasses.replace(ctx, budget={k: v for k, v in ctx.budget.items() if k not in own}))

    def finetune_recipe(self, budget: TokenizerARBudget) -> dict:
        """The resolved fine-tune budget (defaults filled in from the tokenizer budget)."""
        ft = self.ft
        return {"steps": ft.finetune_steps, "batch": ft.finetune_batch or budget.tokenizer_batch,
                "lr": ft.finetune_lr or budget.tokenizer_lr}

    def vq_start(self, ctx: CellContext | None = None) -> VQAdapter:
        """The ``vq`` adapter whose tokenizer wAR-Tok starts from (vq's params, seed, hence cache key)."""
        vq = VQAdapter(VQParams.model_validate(self.params.model_dump(include=set(VQParams.model_fields))),
                       seed=self.seed)
        if ctx is not None:
            vq.bind(ctx)
        return vq

    def tokenizer_key(self, ds: ImageDataset, budget: TokenizerARBudget) -> str:
        if self.params.init == "scratch":
            return super().tokenizer_key(ds, budget)  # vq's recipe + tokenizer_extra_key
        return stable_hash({
            "v": HARNESS_VERSION, "kind": "wartok_finetune", "seed": self.seed,
            "base": self.vq_start().tokenizer_key(ds, budget), "finetune": self.finetune_recipe(budget),
            "wartok": self.params.model_dump(mode="json", include=set(WARTOK_FIELDS) | {"tvc_every"}),
            **self._no_diagnostics_key(),
        })

    def tokenizer_extra_key(self) -> dict:
        # init: scratch. Every lambda, 0 included, has its own entry (the control trains the auxiliary ARs).
        return {"wartok": self.params.model_dump(mode="json", include=set(WARTOK_FIELDS) | {"tvc_every"}),
                **self._no_diagnostics_key()}

    def _no_diagnostics_key(self) -> dict:
        # The same tokenizer, but its cached TVC history is empty: its own entry (default keys unchanged).
        return {} if self.params.control_diagnostics else {"control_diagnostics": False}

    def train_new_tokenizer(self, ctx: CellContext, ds: ImageDataset, budget: TokenizerARBudget):
        self._trained_now = True
        if self.params.init == "scratch":
            warm = int(round(self.params.warm_frac * budget.tokenizer_steps))
            ctx.log_param("wartok.warm_steps", warm)
            tok = self.new_tokenizer()
            stats, history = self._joint_training(ctx, ds, tok, budget.tokenizer_steps, budget.tokenizer_batch,
                                                  budget.tokenizer_lr, warm, "tokenizer")
        else:
            tok, stats, history = self._finetune_vq(ctx, ds, budget)
        ctx.cache.save_torch("wartok_tvc", self.tokenizer_key(ds, budget),
                             {k: torch.tensor(v, dtype=torch.float64) for k, v in history.items() if v})
        self._plot_tvc(ctx, history)
        return tok, stats

    def _finetune_vq(self, ctx: CellContext, ds: ImageDataset, budget: TokenizerARBudget):
        """Load (or train, through vq's code path) vq's tokenizer, then fine-tune it with the WGF hook."""
        vq = self.vq_start(ctx)
        base_ctx = dataclasses.replace(ctx, log_param=lambda k, v: ctx.log_param(f"base_{k}", v),
                                       log_metric=lambda k, v, s=None: ctx.log_metric(f"base_{k}", v, s))
        # vq's cache entry under vq's key: vq's loader holds the per-key training lock, so the vq cell and
        # every wAR-Tok cell running at once train it once
        base = vq.load_or_train_tokenizer(base_ctx, ds, budget)
        tok = self.new_tokenizer()
        tok.load_state_dict(base.state_dict())
        n = self.params.recon_images
        history = {"base_tokenizer_recon_mse": [(0, recon_mse(base, ds.train.images[:n]))],
                   "base_code_usage_perplexity": [(0, code_usage_perplexity(vq._train_tokens, tok.k_max))]}
        for k, pts in history.items():
            ctx.log_metric(k, pts[0][1])
        r = self.finetune_recipe(budget)
        if r["steps"] == 0:
            return tok.eval(), {}, history
        stats, hist = self._joint_training(ctx, ds, tok, r["steps"], r["batch"], r["lr"], 0, "finetune")
        return tok, stats, {**history, **hist}

    def _joint_training(self, ctx: CellContext, ds: ImageDataset, tok: VQTokenizer, steps: int, batch: int,
                        lr: float, warm: int, what: str) -> tuple[dict, dict]:
        """Train ``tok`` for ``steps`` with L_rec (+ lambda * L_wgf after ``warm`` steps); (stats, TVC history)."""
        rec_key, rec_hist = f"{what}_rec_loss", []

        def log(key, value, step=None):
            if key == rec_key and step is not None:
                rec_hist.append((int(step), float(value)))
            ctx.log_metric(key, value, step)

        hook = None
        if self.params.lam > 0 or self.params.control_diagnostics:
            hook = WGFTrainer(self.params, ds.train.images, ds.num_classes, steps, batch, self.seed, ctx.log_metric,
                              False, warm_steps=warm)
        # else (lam = 0, control_diagnostics: false): no hook, the same tokenizer bit for bit (test_wartok)
        stats = train_tokenizer(tok, ds.train.images, steps, batch, lr, self.seed, what, log, ctx.progress,
                                extra_loss=hook)
        return stats, {**(hook.history if hook is not None else {}), rec_key: rec_hist}

    def load_or_train_tokenizer(self, ctx: CellContext, ds: ImageDataset, budget: TokenizerARBudget) -> VQTokenizer:
        self._trained_now = False
        tok = super().load_or_train_tokenizer(ctx, ds, budget)
        if not self._trained_now:  # cached: re-log the TVC view (and the vq start's values) of its training
            hist = ctx.cache.load_torch("wartok_tvc", self.tokenizer_key(ds, budget)) or {}
            history = {k: [(int(s), float(v)) for s, v in t.tolist()] for k, t in hist.items()}
            for k, pts in history.items():
                for s, v in pts:
                    if math.isfinite(v):
                        ctx.log_metric(k, v, s)
            self._plot_tvc(ctx, history)
        ctx.log_metric("tokenizer_recon_mse", recon_mse(tok, ds.train.images[: self.params.recon_images]))
        return tok

    @staticmethod
    def _plot_tvc(ctx: CellContext, history: dict) -> None:
        from adapters.tokenizers.wartok_frontier import plot_tvc

        plot_tvc(history, ctx.artifact_dir / "plots" / "tvc.png")
