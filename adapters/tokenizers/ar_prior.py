"""The class-conditional autoregressive (AR) prior over token sequences.

A small causal Transformer from ``transformers`` (a Llama-style config: RMSNorm, RoPE, SwiGLU),
trained with next-token cross-entropy on frozen tokens. Sequence layout (LlamaGen-style class
conditioning): ``[class token, z_1, ..., z_L]``; the logits at position t predict z_{t+1}.
Token ids z_t lie in [0, V); class c has id V + c; id V + num_classes is the null class (label
dropout, unconditional sampling). An optional boolean ``allowed`` mask [L, V] restricts position
t to a subset of the vocabulary: VCQ uses it for the first K_t codes (arXiv 2605.06207),
Prologue for its per-segment vocabularies (arXiv 2605.06137).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from transformers import LlamaConfig, LlamaForCausalLM

from bench.adapter import count_nfe
from bench.training import Schedule, Update, fit, minibatches, sample_autoregressive
from adapters.tokenizers.params import PriorConfig  # noqa: F401  (declared in the light module)


@dataclass
class PriorBudget:
    steps: int
    batch_size: int
    lr: float
    label_dropout: float = 0.1
    warmup: int = 50
    eval_every: int = 100  # validation CE every this many steps (when train_prior gets ``val``)
    patience: int = 0  # evaluations without improvement before stopping (0: run all steps)


class ARPrior(torch.nn.Module):
    """AR prior over ``length`` tokens with vocabulary ``vocab`` (plus class tokens)."""

    def __init__(self, vocab: int, length: int, num_classes: int, cfg: PriorConfig, allowed: torch.Tensor | None = None):
        super().__init__()
        self.vocab, self.length, self.num_classes, self.cfg = vocab, length, num_classes, cfg
        hf = LlamaConfig(
            vocab_size=vocab + num_classes + 1, hidden_size=cfg.width, intermediate_size=int(cfg.width * cfg.mlp_ratio),
            num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
            max_position_embeddings=length + 1, tie_word_embeddings=False, attention_dropout=0.0,
        )
        hf._attn_implementation = "sdpa"
        self.model = LlamaForCausalLM(hf)
        if allowed is None:
            allowed = torch.ones(length, vocab, dtype=torch.bool)
        if tuple(allowed.shape) != (length, vocab):
            raise ValueError(f"allowed mask must be [{length}, {vocab}], got {tuple(allowed.shape)}")
        self.register_buffer("allowed", allowed.clone(), persistent=True)
        self._kv = None  # (ids [B, t+1], past key/values) of the last eval-mode next_logits call

    @property
    def device(self) -> torch.device:
        return self.allowed.device

    @property
    def null_class(self) -> int:
        return self.num_classes

    def input_ids(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """tokens int64 [B, T<=L], labels int64 [B] (num_classes = null) -> ids [B, T+1]."""
        cls = (self.vocab + labels.to(self.device)).unsqueeze(1)
        return torch.cat([cls, tokens.to(self.device)], dim=1)

    def logits_from_embeds(self, embeds: torch.Tensor) -> torch.Tensor:
        """Input embeddings [B, T, width] -> code logits [B, T, V] (class-token logits dropped)."""
        return self.model(inputs_embeds=embeds, use_cache=False).logits[..., : self.vocab]

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.get_input_embeddings()(ids)

    def logits(self, tokens: torch.Tensor, labels: torch.Tensor, masked: bool = True) -> torch.Tensor:
        """Teacher-forced logits (float32 [B, L, V]) for every position of ``tokens`` [B, L]."""
        ids = self.input_ids(tokens[:, :-1], labels)
        out = self.logits_from_embeds(self.embed(ids))
        if masked:
            out = out.masked_fill(~self.allowed[: out.shape[1]], float("-inf"))
        return out

    def log_probs(self, tokens: torch.Tensor, labels: torch.Tensor, masked: bool = True) -> torch.Tensor:
        """log p(z_t = k | z_<t, class) for all k: float32 [B, L, V] (nats)."""
        return torch.log_softmax(self.logits(tokens, labels, masked).float(), dim=-1)

    def nll(self, tokens: torch.Tensor, labels: torch.Tensor, masked: bool = True) -> torch.Tensor:
        """Per-position negative log-likelihood, float32 [B, L], nats."""
        lp = self.log_probs(tokens, labels, masked)
        return -lp.gather(-1, tokens.to(self.device).unsqueeze(-1)).squeeze(-1)

    @torch.no_grad()
    def sample(self, labels: torch.Tensor, temperature: float | torch.Tensor = 1.0, seed: int = 0,
               batch_size: int = 500, top_k: int | None = None) -> torch.Tensor:
        """Draw token sequences int64 [n, L] for ``labels`` [n]; NFE = L forward passes per batch.

        ``temperature``: a float, or one per position ([L], read as ``float(temperature[t])``).
        Positions are restricted to ``allowed``; see :func:`bench.training.sample_autoregressive`.
        """
        was_training = self.training
        self.eval()
        self._kv = None
        try:
            out = sample_autoregressive(self.next_logits, labels, self.length, seed, temperature, self.allowed,
                                        top_k, batch_size, self.device)
        finally:
            self._kv = None
            self.train(was_training)
        return out

    def next_logits(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Code logits float32 [B, V] of position t given tokens [B, t] and labels [B] (unmasked).

        One call is one network evaluation per image: counted (:func:`bench.adapter.count_nfe`).
        In eval mode without autograd the key/value cache of the previous call is reused when this
        call's sequence extends it by exactly one token (checked on the ids, so any other prefix is
        computed afresh): ancestral sampling then costs one new position per step instead of the
        whole prefix; the logits equal the uncached ones up to float round-off (tested).
        """
        count_nfe(len(labels))
        ids = self.input_ids(tokens, labels)
        if self.training or torch.is_grad_enabled():
            self._kv = None
            return self.logits_from_embeds(self.embed(ids))[:, -1].float()
        kv = getattr(self, "_kv", None)
        if kv is not None and kv[0].shape == (ids.shape[0], ids.shape[1] - 1) and torch.equal(kv[0], ids[:, :-1]):
            out = self.model(inputs_embeds=self.embed(ids[:, -1:]), past_key_values=kv[1], use_cache=True)
        else:
            out = self.model(inputs_embeds=self.embed(ids), use_cache=True)
        self._kv = (ids, out.past_key_values) if ids.shape[1] <= self.length else None
        return out.logits[:, -1, : self.vocab].float()


@torch.no_grad()
def mean_nll(prior: ARPrior, tokens: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Mean masked CE of ``tokens`` [N, L] under ``prior`` with their labels (nats/token), eval mode."""
    was = prior.training
    prior.eval()
    tot = sum(float(prior.nll(tokens[i:i + batch_size], labels[i:i + batch_size]).double().sum())
              for i in range(0, len(tokens), batch_size))
    prior.train(was)
    return tot / tokens.numel()


def train_prior(prior: ARPrior, tokens: torch.Tensor, labels: torch.Tensor, budget: PriorBudget, seed: int,
                what: str = "AR prior", log=None, show_progress: bool = True,
                val: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict:
    """Fit ``prior`` by next-token CE on ``tokens`` [N, L] (int64) with ``labels`` [N].

    Label dropout replaces the class by the null class with probability ``label_dropout``.
    AdamW, linear warm-up then cosine decay to 5 % (:class:`bench.training.Schedule`), gradient
    clipping at 1. With ``val`` = (tokens, labels) held out from training: the validation CE
    (:func:`mean_nll`) every ``budget.eval_every`` steps and at the end, logged as ``<what>_val_loss``;
    the prior ends in its best-validation state, and with ``budget.patience`` > 0 training stops
    after that many evaluations without improvement (early stopping).
    Returns {"train_loss": final mean CE (nats/token), "seconds"[, "val_loss", "best_step", "steps_run"]}.
    Raises :class:`bench.training.TrainingDiverged` on NaN/inf.
    """
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(prior.parameters(), lr=budget.lr, betas=(0.9, 0.95), weight_decay=0.01)
    update = Update(opt, Schedule("cosine", budget.steps, budget.warmup, floor=0.05), 1.0, prior.parameters(), what)
    g = torch.Generator().manual_seed(seed + 1)
    prior.train()

    def step_fn(step: int, idx: torch.Tensor):
        z, y = tokens[idx].to(prior.device), labels[idx].clone()
        drop = torch.rand(len(y), generator=g) < budget.label_dropout
        y[drop] = prior.null_class
        logits = prior.logits(z, y, masked=prior.cfg.mask_logits_in_training)
        loss = F.cross_entropy(logits.reshape(-1, prior.vocab).float(), z.reshape(-1))  # nats/token
        return loss, {"loss": loss}

    prefix = f"{what.replace(' ', '_')}_"
    best = {"loss": float("inf"), "step": -1, "state": None, "bad": 0}

    def evaluate(step: int) -> bool:
        v = mean_nll(prior, *val)
        if log is not None:
            log(f"{prefix}val_loss", v, step + 1)
        if v < best["loss"]:
            best.update(loss=v, step=step + 1, bad=0,
                        state={k: t.detach().clone() for k, t in prior.state_dict().items()})
        else:
            best["bad"] += 1
        return bool(budget.patience) and best["bad"] >= budget.patience

    res = fit(step_fn, minibatches(len(tokens), budget.batch_size, budget.steps, seed), budget.steps, what, update,
              log=log, log_prefix=prefix, show_progress=show_progress,
              checkpoint=evaluate if val is not None else None, checkpoint_every=budget.eval_every)
    out = {"train_loss": res.ema.get("loss") or float("nan"), "seconds": res.seconds}
    if val is not None:
        if res.steps % budget.eval_every:  # the last state is a candidate too
            evaluate(res.steps - 1)
        prior.load_state_dict(best["state"])
        out.update(val_loss=best["loss"], best_step=float(best["step"]), steps_run=float(res.steps))
    prior.eval()
    return out
