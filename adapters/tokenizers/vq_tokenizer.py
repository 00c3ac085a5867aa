"""The shared 1D VQ image tokenizer used by ``vq`` (baseline) and ``vcq``.

Architecture (the small-scale recipe of the VCQ method note, a 1D "learned query" tokenizer so
that token order is meaningful): 4x4 patches -> Transformer encoder over [patches ; L learned
queries] -> L latents z_t in R^d, l2-normalised -> cosine-similarity vector quantiser with one
shared codebook E in R^{K_max x d} (l2-normalised codes, straight-through estimator, commitment
loss beta*||sg(q) - z||^2 + ||q - sg(z)||^2, beta = 0.25) -> Transformer decoder over
[codes ; learned patch queries] -> patches. Loss: L1 + L2 reconstruction + VQ loss.

Position t may only use the first K_t codes (``codebook_sizes``): an additive -inf mask on the
similarity logits before the argmax (VCQ, arXiv 2605.06207; all K_t = K for the uniform baseline).
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from bench.training import Schedule, Update, fit, minibatches, to_unit, to_uint8
from adapters.tokenizers.params import TokenizerConfig  # noqa: F401  (declared in the light module)


@runtime_checkable
class Quantiser(Protocol):
    """The tokenizer's quantiser component: latents -> code ids and code vectors.

    The encoder gives l2-normalised latents z float [B, L, d] (d = ``tokenizer.code_dim``); the
    decoder reads code vectors of the same shape. The default is the tokenizer's own cosine VQ
    codebook (:class:`VQTokenizer` implements this protocol); an ``nn.Module`` with these three
    members replaces it (FSQ, LFQ, residual VQ; docs/plugins.md has an FSQ one).
    """

    @property
    def codebook_sizes(self) -> list[int]:
        """K_t >= 2 for each position t = 0..L-1 (ids at position t lie in [0, K_t))."""
        ...

    def quantise(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z float [B, L, d] -> (code vectors with a straight-through gradient [B, L, d], ids int64
        [B, L], the quantiser's loss: a scalar added to the reconstruction loss, 0 if it has none)."""
        ...

    def vectors(self, ids: torch.Tensor) -> torch.Tensor:
        """ids int64 [..., L] -> their code vectors float [..., L, d] (what the decoder reads)."""
        ...


class VQTokenizer(nn.Module):
    """Images float [B, C, H, W] in [-1, 1] <-> tokens int64 [B, L] with per-position codebook sizes.

    ``quantiser``: a :class:`Quantiser` component, or None for the built-in cosine VQ codebook (the
    vq family's; parameters, their order, state-dict names and numerics as they always were). A
    component's ``codebook_sizes`` must equal ``codebook_sizes``; it is the submodule ``quantiser_component``.
    """

    def __init__(self, cfg: TokenizerConfig, codebook_sizes: list[int], channels: int, resolution: int,
                 quantiser: nn.Module | None = None):
        super().__init__()
        if len(codebook_sizes) != cfg.length:
            raise ValueError(f"codebook_sizes has {len(codebook_sizes)} entries, expected L={cfg.length}")
        if quantiser is not None and list(quantiser.codebook_sizes) != list(codebook_sizes):
            raise ValueError(f"the quantiser's codebook_sizes {list(quantiser.codebook_sizes)} are not the "
                             f"tokenizer's {list(codebook_sizes)}")
        self._given = quantiser
        if resolution % cfg.patch:
            raise ValueError(f"resolution {resolution} is not divisible by patch size {cfg.patch}")
        self.cfg, self.channels, self.resolution = cfg, channels, resolution
        self.grid = resolution // cfg.patch
        n_patch, w = self.grid**2, cfg.width
        self.k_max = max(codebook_sizes)
        self.register_buffer("codebook_sizes_t", torch.tensor(codebook_sizes, dtype=torch.long))
        mask = torch.arange(self.k_max)[None, :] >= self.codebook_sizes_t[:, None]  # [L, K_max], True = forbidden
        self.register_buffer("forbidden", mask)
        self.build_networks(cfg, channels, n_patch, w)
        del self._given

    def add_quantiser(self, cfg: TokenizerConfig) -> None:
        """The quantiser's place in ``build_networks``: the given component, else the cosine codebook
        (SimVQ-style init N(0, d^-1/2); codes are l2-normalised on use)."""
        if self._given is not None:
            self.quantiser_component = self._given
        else:
            self.codebook = nn.Parameter(torch.randn(self.k_max, cfg.code_dim) * cfg.code_dim**-0.5)

    @property
    def quantiser(self) -> Quantiser:
        """The component, or the tokenizer itself (its cosine codebook: :meth:`quantise`, :meth:`vectors`)."""
        comp = self._modules.get("quantiser_component")
        return self if comp is None else comp

    def stack(self, w: int) -> nn.TransformerEncoder:
        """A pre-norm Transformer of ``cfg.depth`` layers, width ``w`` (encoder and decoder)."""
        layer = nn.TransformerEncoderLayer(w, self.cfg.heads, 2 * w, dropout=0.0, batch_first=True, norm_first=True)
        return nn.TransformerEncoder(layer, self.cfg.depth, enable_nested_tensor=False)

    def build_networks(self, cfg: TokenizerConfig, channels: int, n_patch: int, w: int) -> None:
        """Encoder, codebook and decoder of the 1D query tokenizer (``tokenizer.kind: query1d``)."""
        stack = lambda: self.stack(w)  # noqa: E731
        self.patch_in = nn.Conv2d(channels, w, cfg.patch, stride=cfg.patch)
        self.enc_pos = nn.Parameter(torch.randn(1, n_patch + cfg.length, w) * 0.02)
        self.queries = nn.Parameter(torch.randn(1, cfg.length, w) * 0.02)
        self.encoder = stack()
        self.to_code = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, cfg.code_dim))
        self.add_quantiser(cfg)
        self.from_code = nn.Linear(cfg.code_dim, w)
        self.dec_pos = nn.Parameter(torch.randn(1, cfg.length + n_patch, w) * 0.02)
        self.patch_queries = nn.Parameter(torch.randn(1, n_patch, w) * 0.02)
        self.decoder = stack()
        self.patch_out = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, channels * cfg.patch**2))

    @property
    def codebook_sizes(self) -> list[int]:
        return self.codebook_sizes_t.tolist()

    @property
    def feature_length(self) -> int:
        """N, the length of :meth:`features`' sequence (here n_patch + L)."""
        return self.grid**2 + self.cfg.length

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x float [B, C, H, W] in [-1, 1] -> the encoder's output sequence float [B, N, width]
        ([patches ; queries] here; what Prologue-Post's prologue encoder reads)."""
        p = self.patch_in(x).flatten(2).transpose(1, 2)  # [B, n_patch, w]
        h = torch.cat([p, self.queries.expand(len(x), -1, -1)], 1) + self.enc_pos
        return self.encoder(h)

    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        """x float [B, C, H, W] in [-1, 1] -> l2-normalised latents z float [B, L, d]."""
        h = self.features(x)[:, -self.cfg.length :]
        return F.normalize(self.to_code(h), dim=-1)

    def codes(self) -> torch.Tensor:
        """l2-normalised codebook float [K_max, d]."""
        return F.normalize(self.codebook, dim=-1)

    def similarity(self, z: torch.Tensor) -> torch.Tensor:
        """Cosine similarities float [B, L, K_max], forbidden codes (k >= K_t) set to -inf."""
        return (z @ self.codes().t()).masked_fill(self.forbidden, float("-inf"))

    def quantise(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The cosine codebook (:class:`Quantiser`): argmax similarity among the first K_t codes,
        straight-through, loss beta*||sg(q) - z||^2 + ||q - sg(z)||^2."""
        idx = self.similarity(z).argmax(-1)
        q = self.codes()[idx]
        vq_loss = self.cfg.beta * F.mse_loss(z, q.detach()) + F.mse_loss(q, z.detach())
        return z + (q - z).detach(), idx, vq_loss

    def vectors(self, ids: torch.Tensor) -> torch.Tensor:
        """The cosine codebook (:class:`Quantiser`): ids int64 [..., L] -> l2-normalised codes [..., L, d]."""
        return self.codes()[ids]

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """z [B, L, d] -> (straight-through codes [B, L, d], indices int64 [B, L], quantiser loss scalar)."""
        return self.quantiser.quantise(z)

    def code_vectors(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens int64 [B, L] -> their code vectors float [B, L, d] (the quantiser's :meth:`vectors`)."""
        return self.quantiser.vectors(tokens)

    def decode_codes(self, q: torch.Tensor) -> torch.Tensor:
        """Code vectors [B, L, d] -> images float [B, C, H, W] (unclamped, ~[-1, 1])."""
        b = len(q)
        h = torch.cat([self.from_code(q), self.patch_queries.expand(b, -1, -1)], 1) + self.dec_pos
        h = self.patch_out(self.decoder(h)[:, self.cfg.length :])  # [B, n_patch, C*p*p]
        p, g = self.cfg.patch, self.grid
        h = h.view(b, g, g, self.channels, p, p).permute(0, 3, 1, 4, 2, 5)
        return h.reshape(b, self.channels, g * p, g * p)

    def forward(self, x: torch.Tensor):
        z = self.encode_latents(x)
        q, idx, vq_loss = self.quantize(z)
        return self.decode_codes(q), idx, vq_loss

    @property
    def device(self) -> torch.device:
        return self.codebook_sizes_t.device

    @torch.no_grad()
    def encode(self, images: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """uint8 [B, C, H, W] -> int64 tokens [B, L] (on the CPU)."""
        out = [self.quantize(self.encode_latents(to_unit(images[i : i + batch_size].to(self.device))))[1].cpu()
               for i in range(0, len(images), batch_size)]
        return torch.cat(out) if out else torch.empty(0, self.cfg.length, dtype=torch.long)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
        """int64 tokens [B, L] -> uint8 images [B, C, H, W] (on the CPU)."""
        tokens = tokens.to(self.device)
        if (tokens >= self.codebook_sizes_t).any() or (tokens < 0).any():
            raise ValueError("decode: a token lies outside its position's codebook [0, K_t)")
        out = [to_uint8(self.decode_codes(self.code_vectors(tokens[i : i + batch_size]))).cpu()
               for i in range(0, len(tokens), batch_size)]
        return torch.cat(out)


def reconstruction_loss(recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L1 + L2 (the method note's CPU recipe: no LPIPS/GAN)."""
    return F.l1_loss(recon, x) + F.mse_loss(recon, x)


def train_tokenizer(tok: VQTokenizer, images: torch.Tensor, steps: int, batch_size: int, lr: float, seed: int,
                    what: str = "tokenizer", log=None, show_progress: bool = True, extra_loss=None) -> dict:
    """Train ``tok`` on uint8 ``images`` [N, C, H, W] with L1 + L2 + VQ loss (AdamW, warm-up + cosine, clip 1).

    ``extra_loss(tok, x, z, idx, step) -> scalar`` lets a method add a term (e.g. wAR-Tok's prior
    matching) without changing the reconstruction objective. Returns final EMA losses and seconds.
    """
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(tok.parameters(), lr=lr, betas=(0.9, 0.99), weight_decay=1e-4)
    update = Update(opt, Schedule("cosine", steps, min(100, steps // 10 + 1), floor=0.05), 1.0, tok.parameters(),
                    what)
    tok.train()

    def step_fn(step: int, idx: torch.Tensor):
        x = to_unit(images[idx].to(tok.device))
        z = tok.encode_latents(x)
        q, codes, vq_loss = tok.quantize(z)
        rec = reconstruction_loss(tok.decode_codes(q), x)
        loss = rec + vq_loss
        parts = {"rec_loss": rec, "vq_loss": vq_loss}
        if extra_loss is not None:
            extra = extra_loss(tok, x, z, codes, step)
            if extra is not None:
                loss = loss + extra
                parts["extra_loss"] = extra
        return loss, parts

    res = fit(step_fn, minibatches(len(images), batch_size, steps, seed), steps, what, update, log=log,
              log_prefix=f"{what}_", show_progress=show_progress)
    tok.eval()
    return {**res.ema, "seconds": res.seconds}
