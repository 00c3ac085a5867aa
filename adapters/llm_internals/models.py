"""Tiny decoder LMs for the LLM-internals family and head-wise RMSNorm (arXiv:2605.06611).

:class:`ArchSpec` builds a ``transformers`` :class:`~transformers.LlamaForCausalLM` (RMSNorm,
SwiGLU, RoPE, *no* query/key norm: the setting of the paper's analysis) or, as a second setting,
a :class:`~transformers.Qwen3ForCausalLM` (same, plus Qwen3's q/k RMSNorm, a possible confound
for sink studies). Byte-level vocabulary (256 ids), eager attention (attention weights are
needed for the sink metrics), float32.

Head-wise RMSNorm (arXiv:2605.06611, the method section "removing the variance discrepancy"):
each head's aggregated output o_t^(h) = softmax(QK^T/sqrt(d_k)) V (shape [B, T, H, d_k]) is
normalised, ô_t^(h) = o_t^(h) / RMS(o_t^(h)) * λ, with RMS(x) = sqrt(mean_j x_j^2 + eps) and a
learnable gain λ ∈ R^{d_k} (one per layer, shared across heads; ``gain: per_head`` gives each head
its own), *before* the heads are concatenated into o_proj. It is attached without forking
transformers code: a :class:`HeadRMSNorm` submodule ``self_attn.head_norm`` (so its gain is a
parameter, trained and saved with the model) and a forward pre-hook on ``self_attn.o_proj`` that
views o_proj's input [B, T, H*d_k] as [B, T, H, d_k], normalises and flattens it back. The hook
works with eager and sdpa attention alike.
"""
from __future__ import annotations

import torch
from torch import nn

from adapters.llm_internals.params import VOCAB, ArchSpec  # noqa: F401 - re-exported (light module)


def hf_config(spec: ArchSpec):
    """The ``transformers`` config of ``spec`` (eager attention, no dropout, no bias)."""
    common = dict(vocab_size=VOCAB, hidden_size=spec.hidden, intermediate_size=spec.intermediate,
                  num_hidden_layers=spec.layers, num_attention_heads=spec.heads,
                  num_key_value_heads=spec.kv_heads, head_dim=spec.head_dim,
                  max_position_embeddings=spec.max_position, initializer_range=spec.init_std,
                  tie_word_embeddings=spec.tie_embeddings, rope_theta=10000.0, attention_dropout=0.0,
                  bos_token_id=None, eos_token_id=None, pad_token_id=None)
    if spec.arch == "llama":
        from transformers import LlamaConfig

        cfg = LlamaConfig(**common, attention_bias=False, mlp_bias=False, hidden_act="silu")
    else:
        from transformers import Qwen3Config

        cfg = Qwen3Config(**common, attention_bias=False, use_sliding_window=False)
    cfg._attn_implementation = "eager"
    return cfg


def build_model(spec: ArchSpec, init_seed: int) -> nn.Module:
    """A freshly initialised causal LM (float32, eval mode); init drawn from ``torch.manual_seed(init_seed)``."""
    from transformers import LlamaForCausalLM, Qwen3ForCausalLM

    cfg = hf_config(spec)
    torch.manual_seed(init_seed)
    cls = LlamaForCausalLM if spec.arch == "llama" else Qwen3ForCausalLM
    model = cls(cfg)
    return model.float().eval()


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """The ``self_attn`` module of every decoder layer, in layer order."""
    return [layer.self_attn for layer in model.model.layers]


class HeadRMSNorm(nn.Module):
    """RMSNorm over each head's d_k entries with a learnable gain (arXiv:2605.06611).

    ``forward(x)``: x float [..., H*d_k] (o_proj's input) -> same shape; viewed as [..., H, d_k],
    each head vector divided by sqrt(mean(x^2) + eps), then multiplied by ``weight``
    ([d_k], shared across heads, or [H, d_k] with ``per_head``). Computed in float32.
    """

    def __init__(self, heads: int, head_dim: int, eps: float = 1e-6, per_head: bool = False, init: float = 1.0):
        super().__init__()
        self.heads, self.head_dim, self.eps = heads, head_dim, eps
        shape = (heads, head_dim) if per_head else (head_dim,)
        self.weight = nn.Parameter(torch.full(shape, float(init)))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """The gain-free part: x [..., H*d_k] -> [..., H, d_k] with unit RMS per head (up to eps)."""
        h = x.float().reshape(*x.shape[:-1], self.heads, self.head_dim)
        return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.normalise(x) * self.weight
        return out.reshape(x.shape).to(x.dtype)


def _o_proj_pre_hook(module: nn.Module, args: tuple):
    """Forward pre-hook of ``o_proj``: apply the parent attention's ``head_norm`` to its input."""
    (x, *rest) = args
    return (module._head_norm(x), *rest)


def attach_headwise_rmsnorm(model: nn.Module, eps: float = 1e-6, per_head: bool = False,
                            init: float = 1.0) -> list[HeadRMSNorm]:
    """Insert head-wise RMSNorm before o_proj in every layer of ``model`` (in place); return the norms.

    Idempotent-safe: raises ValueError if ``model`` already carries head norms.
    """
    norms = []
    for attn in attention_modules(model):
        if hasattr(attn, "head_norm"):
            raise ValueError("attach_headwise_rmsnorm: the model already has head-wise RMSNorm")
        heads = attn.config.num_attention_heads
        norm = HeadRMSNorm(heads, attn.head_dim, eps, per_head, init)
        attn.head_norm = norm  # registered submodule: trained and saved with the model
        object.__setattr__(attn.o_proj, "_head_norm", norm)  # plain reference, not a second registration
        attn.o_proj.register_forward_pre_hook(_o_proj_pre_hook)
        norms.append(norm)
    return norms


def n_params(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))
