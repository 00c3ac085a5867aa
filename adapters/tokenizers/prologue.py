"""``prologue``: Prologue-Post, "Autoregressive Visual Generation Needs a Prologue" (arXiv 2605.06137).

What the paper states (abstract): a small set of *prologue tokens* is produced by the tokenizer's
encoder and prepended to the visual tokens; they are trained exclusively with the AR cross-entropy,
while the visual tokens stay dedicated to reconstruction (the decoder never sees the prologue).
The "Post" variant freezes a pretrained tokenizer and adds a prologue path, so reconstruction is
identical to the baseline by construction. Details below follow the official code
(github.com/Zyriix/prologue, read for reference, not copied) at CPU scale; where the code and
paper are silent, the choice is a :class:`PrologueParams` / :class:`PrologueBudget` field:

- **Frozen visual path**: exactly the ``vq`` tokenizer (same parameters, same cache key, so the
  cached vq tokenizer is reused and ``rfid``/``rfd`` equal vq's up to decoding).
- **Prologue encoder** (``prologue_width``/``prologue_depth``/``prologue_heads``): a Transformer over
  the frozen encoder's output features (all patch + query positions) plus ``n_prologue`` learned
  queries -> ``n_prologue`` latents -> l2-normalised, projected to ``prologue_code_dim``.
- **ProbQ** (own codebook of ``prologue_codebook_size`` l2-normalised codes): p = softmax(cos / ``tau``),
  index = argmax p, straight-through one-hot o = p + sg(onehot - p); no commitment/entropy loss.
- **Joint AR** (``joint_prior``; unconditional, as in the code): sequence
  [BOS, prologue_1..P, EOS, visual_1..L], vocabulary K_v + K_p + 1 (prologue ids offset by K_v,
  EOS = K_v + K_p), per-segment ``allowed`` masks. The prologue *inputs* are o @ W_emb[prologue rows]
  so the AR's CE reaches the prologue encoder; visual inputs are hard lookups. Encoder loss:
  ``ce_weight_prologue`` * (CE_prologue + CE_eos) + ``ce_weight_visual`` * CE_visual, each summed over
  its positions and divided by the full length P + 1 + L. ``visual_dropout``: per sample, every
  visual input token is replaced by EOS (targets kept), so the prologue must carry information.
- **Alternation** (budget ``prologue_steps``): an encoder step (AR parameters frozen) then an AR step
  on the same batch's detached tokens (encoder frozen); AdamW ``prologue_lr`` / ``joint_prior_lr``.
- **Final AR**: discarded joint AR; a fresh class-conditional AR (``prior``, same budget as vq's)
  trained on the frozen sequences [class, prologue, EOS, visual].
- **Frozen 2D option** (``tokenizer.kind: raster2d``, :mod:`.raster_tokenizer`): the paper's Post
  variant freezes a 2D raster tokenizer; the prologue encoder then reads its L per-patch features.
- **Controls** (method note, "What would falsify it"): ``prologue_signal: random`` keeps the prologue
  encoder at its seeded init (no CE signal; the joint AR, discarded anyway, is not trained), the
  prologue tokens are still computed and the final AR trained identically, so a gain is not just
  "P extra tokens"; ``final_ar_conditional: false`` trains/samples the final AR with the null class
  only, where class information in the prologue is not redundant with the label.
- **Code usage**: ``prologue_usage_perplexity`` / ``prologue_usage_codes`` every ``USAGE_EVERY`` steps
  (on ``USAGE_IMAGES`` fixed train images), and ``prologue_code_usage_perplexity`` /
  ``prologue_codes_used`` on the whole train split after training (falsifier: perplexity near 1).
- **Sampling**: ``temperature`` on visual tokens, ``prologue_temperature`` (default: the same) on
  prologue tokens; no guidance.

Token layout of :meth:`encode`: [prologue_1..P, visual_1..L] (EOS excluded), ``codebook_sizes`` =
[K_p]*P + [K_v]*L, so ``probe@k`` (the first k tokens of the sequence the AR sees) probes the
prologue for k <= P. :meth:`decode` reads only the visual part. :meth:`prior_nll` returns the
per-token NLL of those P + L tokens (the EOS position is deterministic and dropped).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from adapters.tokenizers.vq_tokenizer import VQTokenizer
from adapters.tokenizers.vq import TokenizerARBudget, VQAdapter, VQParams, code_usage_perplexity
from bench import HARNESS_VERSION
from bench.adapter import Conditioning, check_image_batch, count_nfe
from adapters.tokenizers.ar_prior import ARPrior, PriorConfig
from bench.context import CellContext, stable_hash
from bench.data.base import ImageDataset
from bench.registry import register_adapter
from bench.training import Schedule, Update, check_loss, fit, minibatches, to_unit
from adapters.tokenizers.params import PrologueBudget, PrologueParams  # noqa: F401  (declared in the light module)

PROLOGUE_FIELDS = ("prologue_signal", "n_prologue", "prologue_codebook_size", "prologue_code_dim", "tau", "prologue_width",
                   "prologue_depth", "prologue_heads", "joint_prior", "visual_dropout", "ce_weight_prologue",
                   "ce_weight_visual")


class PrologueEncoder(nn.Module):
    """Frozen encoder features [B, N, w_in] -> ProbQ straight-through one-hots [B, P, K_p] and indices."""

    def __init__(self, in_width: int, n_ctx: int, p: PrologueParams, code_dim: int):
        super().__init__()
        w, self.n, self.tau = p.prologue_width, p.n_prologue, p.tau
        self.inp = nn.Linear(in_width, w)
        self.pos = nn.Parameter(torch.randn(1, n_ctx + self.n, w) * 0.02)
        self.queries = nn.Parameter(torch.randn(1, self.n, w) * 0.02)
        layer = nn.TransformerEncoderLayer(w, p.prologue_heads, 2 * w, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, p.prologue_depth, enable_nested_tensor=False)
        self.to_code = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, code_dim))
        self.codebook = nn.Parameter(torch.randn(p.prologue_codebook_size, code_dim) * code_dim**-0.5)

    def codes(self) -> torch.Tensor:
        return F.normalize(self.codebook, dim=-1)

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.cat([self.inp(feats), self.queries.expand(len(feats), -1, -1)], 1) + self.pos
        z = F.normalize(self.to_code(self.encoder(h)[:, -self.n:]), dim=-1)
        prob = torch.softmax(z @ self.codes().t() / self.tau, dim=-1)
        idx = prob.argmax(-1)
        onehot = F.one_hot(idx, prob.shape[-1]).to(prob.dtype)
        return prob + (onehot - prob).detach(), idx


USAGE_EVERY = 50  # steps between code-usage evaluations during prologue training
USAGE_IMAGES = 1024  # the fixed train images those evaluations tokenize


def frozen_features(tok: VQTokenizer, x: torch.Tensor) -> torch.Tensor:
    """The frozen tokenizer encoder's output sequence [B, N, width] (no grad): N = n_patch + L for the
    1D query tokenizer, L per-patch features for the 2D raster one (``tok.feature_length``)."""
    with torch.no_grad():
        return tok.features(x)


def codes_used(tokens: torch.Tensor) -> int:
    """Distinct code ids in ``tokens`` (all positions pooled)."""
    return int(torch.unique(tokens).numel())


def sequence_layout(k_v: int, k_p: int, n_pro: int, length: int) -> tuple[int, int, torch.Tensor]:
    """(vocabulary V, sequence length T, allowed mask [T, V]) of [prologue, EOS, visual]."""
    vocab, total = k_v + k_p + 1, n_pro + 1 + length
    allowed = torch.zeros(total, vocab, dtype=torch.bool)
    allowed[:n_pro, k_v:k_v + k_p] = True
    allowed[n_pro, k_v + k_p] = True
    allowed[n_pro + 1:, :k_v] = True
    return vocab, total, allowed


def to_sequences(prologue: torch.Tensor, visual: torch.Tensor, k_v: int, k_p: int) -> torch.Tensor:
    """Prologue [B, P] in [0, K_p) and visual [B, L] in [0, K_v) -> AR ids [B, P + 1 + L]."""
    eos = torch.full((len(visual), 1), k_v + k_p, dtype=torch.long, device=visual.device)
    return torch.cat([prologue.to(visual.device) + k_v, eos, visual], 1)


@register_adapter("prologue")
class PrologueAdapter(VQAdapter):
    """Prologue-Post: frozen vq tokenizer + AR-trained prologue tokens prepended (arXiv 2605.06137)."""

    Params = PrologueParams
    Budget = PrologueBudget
    reuses_weights_of = VQAdapter  # freezes vq's tokenizer: the same cached weights (its own prior and prologue)

    # -- layout ---------------------------------------------------------------------------------
    @property
    def k_v(self) -> int:
        return self.params.codebook_size

    @property
    def k_p(self) -> int:
        return self.params.prologue_codebook_size

    @property
    def n_pro(self) -> int:
        return self.params.n_prologue

    @property
    def codebook_sizes(self) -> list[int]:
        return [self.k_p] * self.n_pro + self.schedule()

    def prior_layout(self):
        return sequence_layout(self.k_v, self.k_p, self.n_pro, self.params.tokenizer.length)

    def prior_sequences(self, tokens: torch.Tensor) -> torch.Tensor:
        return to_sequences(tokens[:, :self.n_pro], tokens[:, self.n_pro:], self.k_v, self.k_p)

    def tokens_from_sequences(self, seqs: torch.Tensor) -> torch.Tensor:
        return torch.cat([seqs[:, :self.n_pro] - self.k_v, seqs[:, self.n_pro + 1:]], 1)

    # -- lifecycle ------------------------------------------------------------------------------
    def prepare(self, ctx: CellContext) -> None:
        ds = self.bind(ctx)
        budget = PrologueBudget.model_validate(ctx.budget)
        self.tokenizer = self.load_or_train_tokenizer(ctx, ds, budget)  # vq's tokenizer, vq's cache key
        self.tokenizer.requires_grad_(False).eval()
        visual = self._train_tokens
        self.penc, prologue = self.load_or_train_prologue(ctx, ds, budget, visual)
        self.train_tokens = torch.cat([prologue, visual], 1)
        self.train_images = ds.train.images  # train_tokens are their tokens (train_prefix_tokens)
        n_prior = budget.prior_train_images or len(ds.train)
        self.prior = self.load_or_train_prior(ctx, ds, budget, self.train_tokens[:n_prior], ds.train.labels[:n_prior])
        ctx.log_param("codebook_sizes", self.codebook_sizes)
        ctx.log_metric("code_usage_perplexity", code_usage_perplexity(visual, self.k_v))
        ctx.log_metric("prologue_code_usage_perplexity", code_usage_perplexity(prologue, self.k_p))
        ctx.log_metric("prologue_codes_used", codes_used(prologue))
        ctx.log_param("prologue_signal", self.params.prologue_signal)
        ctx.log_param("final_ar_conditional", self.params.final_ar_conditional)

    def new_prologue_encoder(self) -> PrologueEncoder:
        torch.manual_seed(self.seed + 1)
        tok = self.tokenizer
        return PrologueEncoder(tok.cfg.width, tok.feature_length, self.params,
                               self.params.prologue_code_dim or self.params.tokenizer.code_dim).to(tok.device)

    def prologue_key(self, ds: ImageDataset, budget: PrologueBudget) -> str:
        return stable_hash({
            "v": HARNESS_VERSION, "kind": "prologue_path", "tok": self.tokenizer_key(ds, budget), "seed": self.seed,
            "params": self.params.model_dump(mode="json", include=set(PROLOGUE_FIELDS)),
            "budget": {k: v for k, v in budget.model_dump().items() if k.startswith(("prologue", "joint"))},
        })

    def load_or_train_prologue(self, ctx, ds, budget, visual) -> tuple[PrologueEncoder, torch.Tensor]:
        key = self.prologue_key(ds, budget)
        ctx.log_param("prologue_cache_key", key)
        penc = self.new_prologue_encoder()
        cached = ctx.cache.load_torch("prologue", key)
        if cached is not None:
            penc.load_state_dict(cached["state"])
            penc.eval()
            return penc, cached["train_prologue"]
        if self.params.prologue_signal == "random":  # the control: no CE signal, the seeded init is kept
            penc.eval()
            stats = {}
            self.log_usage(penc, ds, ctx.log_metric, 0)
        else:
            stats = self.train_prologue(penc, ds, budget, visual, ctx.log_metric, ctx.progress)
        penc.eval()
        prologue = self.encode_prologue(penc, ds.train.images)
        ctx.cache.save_torch("prologue", key, {"state": penc.state_dict(), "train_prologue": prologue, "stats": stats})
        for k, v in stats.items():
            if math.isfinite(v):
                ctx.log_metric(f"prologue_final_{k}", v)  # EMA at the end (the step-wise curves: prologue_*)
        return penc, prologue

    def log_usage(self, penc: PrologueEncoder, ds: ImageDataset, log, step: int) -> None:
        """Log prologue code usage on the first ``USAGE_IMAGES`` train images: ``prologue_usage_perplexity``
        (exp entropy of the pooled code histogram, 1..K_p) and ``prologue_usage_codes`` (distinct codes)."""
        if log is None:
            return
        was_training = penc.training
        penc.eval()
        pidx = self.encode_prologue(penc, ds.train.images[:USAGE_IMAGES])
        penc.train(was_training)
        log("prologue_usage_perplexity", code_usage_perplexity(pidx, self.k_p), step)
        log("prologue_usage_codes", codes_used(pidx), step)

    def train_prologue(self, penc: PrologueEncoder, ds: ImageDataset, budget: PrologueBudget, visual: torch.Tensor,
                       log=None, show_progress: bool = True) -> dict:
        """Alternate prologue-encoder steps (joint AR frozen) and joint-AR steps (encoder frozen)."""
        p, steps = self.params, budget.prologue_steps
        vocab, total, allowed = self.prior_layout()
        torch.manual_seed(self.seed + 2)
        dev = self.tokenizer.device
        joint = ARPrior(vocab, total, ds.num_classes, p.joint_prior, allowed).to(dev)
        opt_e = torch.optim.AdamW(penc.parameters(), lr=budget.prologue_lr, betas=(0.9, 0.99), weight_decay=1e-4)
        opt_a = torch.optim.AdamW(joint.parameters(), lr=budget.joint_prior_lr, betas=(0.9, 0.99), weight_decay=0.03)
        schedule = Schedule("cosine", steps, min(100, steps // 10 + 1), floor=0.05)
        upd_e = Update(opt_e, schedule, 1.0, penc.parameters(), "prologue encoder")
        upd_a = Update(opt_a, schedule, 1.0, joint.parameters(), "joint AR")
        g = torch.Generator().manual_seed(self.seed + 3)
        n_pro, k_v, k_p = self.n_pro, self.k_v, self.k_p
        w_emb = joint.model.get_input_embeddings().weight
        penc.train()
        joint.train()

        def step_fn(step: int, idx: torch.Tensor):
            x = to_unit(ds.train.images[idx].to(dev))
            vis = visual[idx].to(dev)
            feats = frozen_features(self.tokenizer, x)
            null = torch.full((len(idx),), joint.null_class, dtype=torch.long)
            drop = (torch.rand(len(idx), generator=g) < p.visual_dropout).to(dev)

            # (a) prologue-encoder step: CE through the joint AR (its parameters frozen) into o.
            #     Both CE weights 0 = the untrained (random, frozen) prologue control: no step.
            train_enc = p.ce_weight_prologue > 0 or p.ce_weight_visual > 0
            joint.requires_grad_(False)
            o, pidx = penc(feats)
            ids = self._input_ids(joint, pidx, vis, null, drop)
            emb = joint.embed(ids)
            pro_emb = o @ w_emb[k_v:k_v + k_p]
            emb = torch.cat([emb[:, :1], pro_emb, emb[:, 1 + n_pro:]], 1)
            target = to_sequences(pidx, vis, k_v, k_p)
            ce_pe, ce_v = self._segment_ce(joint, emb, target)
            loss_e = p.ce_weight_prologue * ce_pe + p.ce_weight_visual * ce_v
            if train_enc:
                upd_e.step(loss_e, step)
            else:
                check_loss(loss_e, "prologue encoder", step)
            joint.requires_grad_(True)

            # (b) joint-AR step on the same batch's detached tokens (hard lookups everywhere).
            ce_pe_a, ce_v_a = self._segment_ce(joint, joint.embed(ids.detach()), target.detach())
            upd_a.step(ce_pe_a + ce_v_a, step, zero_grad_after=True)
            if step % USAGE_EVERY == 0:
                self.log_usage(penc, ds, log, step)
            return None, {"ce_prologue_eos": ce_pe_a, "ce_visual": ce_v_a, "encoder_loss": loss_e}

        res = fit(step_fn, minibatches(len(visual), budget.prologue_batch, steps, self.seed + 4), steps,
                  "prologue path", log=log, log_prefix="prologue_", show_progress=show_progress)
        penc.eval()
        self.log_usage(penc, ds, log, steps)
        return {**res.ema, "seconds": res.seconds}

    def _input_ids(self, joint: ARPrior, pidx, vis, labels, drop) -> torch.Tensor:
        """AR input ids [B, T]: [class/null, prologue, EOS, visual_1..L-1], dropped visuals -> EOS."""
        seq = to_sequences(pidx.detach(), vis, self.k_v, self.k_p)
        if drop.any():
            seq = seq.clone()
            seq[drop, self.n_pro + 1:] = self.k_v + self.k_p
        return joint.input_ids(seq[:, :-1], labels)

    def _segment_ce(self, joint: ARPrior, emb: torch.Tensor, target: torch.Tensor):
        """(CE summed over prologue + EOS targets, CE summed over visual targets), each / T, batch mean."""
        logits = joint.logits_from_embeds(emb).float()
        logits = logits.masked_fill(~joint.allowed[: logits.shape[1]], float("-inf"))
        ce = F.cross_entropy(logits.reshape(-1, joint.vocab), target.reshape(-1), reduction="none").view(target.shape)
        total = target.shape[1]
        head = self.n_pro + 1
        return ce[:, :head].sum(1).mean() / total, ce[:, head:].sum(1).mean() / total

    @torch.no_grad()
    def encode_prologue(self, penc: PrologueEncoder, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        dev = self.tokenizer.device
        out = [penc(frozen_features(self.tokenizer, to_unit(images[i:i + batch_size].to(dev))))[1].cpu()
               for i in range(0, len(images), batch_size)]
        return torch.cat(out) if out else torch.empty(0, self.n_pro, dtype=torch.long)

    def prior_key_parts(self, ds, budget) -> dict:
        """The final AR is fitted on [prologue, EOS, visual] sequences: keyed by the prologue path."""
        return {"kind": "prologue_ar_prior", "pro": self.prologue_key(ds, budget)}

    # -- tokenize -------------------------------------------------------------------------------
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images -> [prologue_1..P, visual_1..L] tokens (EOS excluded)."""
        check_image_batch(images, self.channels, self.resolution, f"{self.registry_name}.encode")
        cached = self.train_prefix_tokens(images)
        if cached is not None:
            return cached
        return torch.cat([self.encode_prologue(self.penc, images), self.tokenizer.encode(images)], 1)

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Decode the visual part only: the decoder never sees the prologue tokens."""
        if tokens.ndim != 2 or tokens.shape[1] != len(self.codebook_sizes):
            raise ValueError(f"{self.registry_name}.decode: expected tokens [B, {len(self.codebook_sizes)}], "
                             f"got {tuple(tokens.shape)}")
        return self.tokenizer.decode(tokens[:, self.n_pro:])

    def code_vectors(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens [B, k] -> code vectors [B, k, max(d_p, d_v)] (prologue / visual codebooks, zero-padded)."""
        with torch.no_grad():
            pc, vc = self.penc.codes(), self.tokenizer.codes()
            d = max(pc.shape[1], vc.shape[1])
            pc, vc = F.pad(pc, (0, d - pc.shape[1])), F.pad(vc, (0, d - vc.shape[1]))
            tokens = tokens.to(pc.device)
            k = tokens.shape[1]
            n = min(k, self.n_pro)
            parts = [pc[tokens[:, :n]]]
            if k > n:
                parts.append(vc[tokens[:, n:]])
            return torch.cat(parts, 1).cpu()

    # -- generate / prior ----------------------------------------------------------------------
    def sample(self, n: int, cond: Conditioning, steps: int | None, seed: int) -> torch.Tensor:
        """Class-conditional ancestral sampling of [prologue, EOS, visual]; NFE = P + 1 + L; no guidance."""
        length = self.prior.length
        if steps not in (None, length):
            raise ValueError(f"{self.registry_name}.sample: an AR prior takes exactly {length} steps, got {steps}")
        labels = self.prior_labels(Conditioning.of(cond).labels)
        if labels is None:
            labels = torch.full((n,), self.prior.null_class, dtype=torch.long)
        t_pro = self.params.prologue_temperature
        if t_pro is None or t_pro == self.params.temperature:
            seqs = self.prior.sample(labels[:n], self.params.temperature, seed)
        else:
            temps = torch.full((length,), float(self.params.temperature))
            temps[: self.n_pro] = t_pro
            seqs = sample_with_temperatures(self.prior, labels[:n], temps, seed)
        return self.decode(self.tokens_from_sequences(seqs))

    def prior_nll(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-token NLL [B, P + L] (nats) of [prologue, visual] under the final AR (EOS dropped)."""
        nll = super().prior_nll(images, labels)
        return torch.cat([nll[:, :self.n_pro], nll[:, self.n_pro + 1:]], 1)


@torch.no_grad()
def sample_with_temperatures(prior: ARPrior, labels: torch.Tensor, temps: torch.Tensor, seed: int,
                             batch_size: int = 500) -> torch.Tensor:
    """:meth:`ARPrior.sample` with a per-position temperature ``temps`` [T]; leaves ``prior`` in eval mode."""
    prior.eval()
    return prior.sample(labels, temps, seed, batch_size)
