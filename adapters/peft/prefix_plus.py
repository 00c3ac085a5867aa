"""Prefix-Tuning+ (PrefixMemory-Tuning): the prefix moved out of attention, as a trainable memory.

Paper: Wang, Chen, Li, Liang, Lee, Kawaguchi, Hu, "Prefix-Tuning+: Modernizing Prefix-Tuning by
Decoupling the Prefix from Attention", arXiv:2506.13674 (v1/v2 2025; v3 renamed
"PrefixMemory-Tuning", ICLR 2026), Section 3 (construction). Prefix-Tuning's head output is a
length-dependent mix of input and prefix attention (their Eq. 2-3); decoupling the two terms
(Eq. 4), linearising the prefix term with a kernel feature map sim(a, b) ~ phi(a)ᵀphi(b) (Eq. 5)
and replacing the prefix-derived sum by a free trainable matrix M (Eq. 6) gives the final form
(Eq. 7), per attention head h and token i::

    o_i^h = softmax-attention(q_i^h, K^h, V^h)  +  phi(q_i^h)ᵀ M^h        (added before W_O)

peft has nothing like it (it is not an ``adaption_prompt``: there is no second softmax), so it is
implemented here with two hooks per decoder layer of a Hugging Face Qwen3 model:
a forward hook on ``self_attn.q_norm`` keeps q (float [B, T, H, d_head], after the per-head RMS
norm and **before RoPE**, so the term does not depend on position), and a forward pre-hook on
``self_attn.o_proj`` adds ``einsum('bthd,hde->bthe', phi(q), M)`` reshaped to [B, T, H*d_head] to
the concatenated head outputs. Choices the sources leave open and that are **ours**: a memory
per query head, zero-initialised (training starts exactly at the base model); ``phi = elu``
(the paper's default; ``gelu`` and ``elu+1`` selectable); optionally a low-rank memory
``M^h = A^h B^h`` (A: d_head x r, random; B: r x d_head, zero) so the trainable-parameter count
can be matched to other arms: ``L * H * 2 * d_head * r`` (full: ``L * H * d_head**2``).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

FEATURE_MAPS = {
    "elu": F.elu,
    "elu1": lambda x: F.elu(x) + 1.0,
    "gelu": F.gelu,
}


class HeadMemory(nn.Module):
    """The memory of one layer: per query head, M^h (d x d) or its low-rank factors A^h B^h.

    Shapes: full ``M`` float [H, d, d]; low-rank ``A`` [H, d, r], ``B`` [H, r, d].
    ``forward(q)`` maps q float [B, T, H, d] to the added head outputs [B, T, H, d].
    """

    def __init__(self, heads: int, head_dim: int, rank: int | None, feature_map: str, generator=None):
        super().__init__()
        self.heads, self.head_dim, self.rank, self.feature_map = heads, head_dim, rank, feature_map
        self.phi = FEATURE_MAPS[feature_map]
        if rank is None:
            self.M = nn.Parameter(torch.zeros(heads, head_dim, head_dim))
        else:
            a = torch.randn(heads, head_dim, rank, generator=generator) / math.sqrt(head_dim)
            self.A = nn.Parameter(a)
            self.B = nn.Parameter(torch.zeros(heads, rank, head_dim))

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        f = self.phi(q.to(self._dtype()))
        if self.rank is None:
            return torch.einsum("bthd,hde->bthe", f, self.M)
        return torch.einsum("bthr,hre->bthe", torch.einsum("bthd,hdr->bthr", f, self.A), self.B)

    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype


class PrefixPlus(nn.Module):
    """All layers' memories plus the hooks that read q and write the head outputs.

    Attached as ``model.prefix_plus`` (so ``model.parameters()``, ``.to()`` and ``state_dict``
    include it). :meth:`detach` removes the hooks and the module.
    """

    def __init__(self, model, rank: int | None, feature_map: Literal["elu", "elu1", "gelu"] = "elu",
                 layers: list[int] | None = None, seed: int = 0):
        super().__init__()
        cfg = model.config
        self.heads = cfg.num_attention_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        n_layers = len(model.model.layers)
        self.layer_ids = list(range(n_layers)) if layers is None else sorted(layers)
        self.rank, self.feature_map = rank, feature_map
        g = torch.Generator().manual_seed(seed)
        self.memories = nn.ModuleDict(
            {str(i): HeadMemory(self.heads, self.head_dim, rank, feature_map, g) for i in self.layer_ids}
        )
        p = next(model.parameters())
        self.to(device=p.device, dtype=torch.float32)
        self._q: dict[int, torch.Tensor] = {}
        self._handles = []
        for i in self.layer_ids:
            attn = model.model.layers[i].self_attn
            self._handles.append(attn.q_norm.register_forward_hook(self._keep_q(i)))
            self._handles.append(attn.o_proj.register_forward_pre_hook(self._add_memory(i)))
        self._model_ref = [model]  # not a submodule reference (avoid a cycle in .modules())
        model.prefix_plus = self

    def _keep_q(self, i: int):
        def hook(module, args, out):
            self._q[i] = out  # [B, T, H, d], post q_norm, pre-RoPE
        return hook

    def _add_memory(self, i: int):
        def hook(module, args):
            (x,) = args  # [B, T, H*d]
            q = self._q.pop(i)
            add = self.memories[str(i)](q).reshape(*x.shape[:-1], self.heads * self.head_dim)
            return (x + add.to(x.dtype),)
        return hook

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        model = self._model_ref[0]
        if getattr(model, "prefix_plus", None) is self:
            del model.prefix_plus

    @staticmethod
    def closed_form_params(layers: int, heads: int, head_dim: int, rank: int | None) -> int:
        """Trainable parameters: full ``L*H*d^2``; low-rank ``L*H*2*d*r``."""
        return layers * heads * (head_dim * head_dim if rank is None else 2 * head_dim * rank)

    def config(self) -> dict:
        return {"peft_type": "PREFIX_TUNING_PLUS", "paper": "arXiv:2506.13674", "rank": self.rank,
                "feature_map": self.feature_map, "layers": self.layer_ids, "heads": self.heads,
                "head_dim": self.head_dim, "q_site": "post-q_norm, pre-RoPE", "out_site": "pre-o_proj"}

    def save_pretrained(self, out_dir: str | Path) -> None:
        """``adapter_model.safetensors`` (the memories) + ``adapter_config.json``, peft's layout."""
        from safetensors.torch import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()},
                  str(out / "adapter_model.safetensors"))
        (out / "adapter_config.json").write_text(json.dumps(self.config(), indent=1))


def rank_for_params(target: int, layers: int, heads: int, head_dim: int) -> int:
    """The low rank r whose count ``L*H*2*d*r`` is closest to ``target`` (at least 1)."""
    per = layers * heads * 2 * head_dim
    return max(1, int(round(target / per)))
