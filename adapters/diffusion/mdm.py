"""``mdm``: absorbing-state masked diffusion on pixels as tokens (MDLM, Sahoo et al. 2024, arXiv 2406.07524).

x0-parameterised denoiser (:class:`adapters.diffusion.model.Denoiser`, no latent), trained on the
continuous-time negative ELBO with weight w(t) = -alpha_t'/(1 - alpha_t) (MDLM Eq. 10-11,
:func:`adapters.diffusion.process.mdm_loss`); ancestral reverse kernel at any number of steps
(MDLM Eq. 7; one denoiser call per step, NFE = steps); likelihood = the negative ELBO.

Compute-matched controls of the VADD comparison (so a VADD gain is not just more training compute):

* by wall-clock (``suites/fmnist_diffusion.yaml``, method ``mdm_wall``): a plain ``mdm`` whose
  ``budget.train_steps`` the suite fixes from a per-step time ratio measured once
  (:mod:`adapters.diffusion.timing`), never from a timer at run time, so the result does not
  depend on the machine; the ``train_cost`` metric shows the realised training seconds of both;
* by FLOPs (``compute_match: vadd-flops``): trained for as many steps as give the training FLOPs of
  a VADD of the same width/depth and ``match_z_dim`` (each model's step counted by torch's
  FlopCounterMode). FLOPs undercount VADD's cost here (its step is ~1.9x an MDM step in time
  but ~1.5x in FLOPs on a 2-core CPU), so this control gets less wall-clock than VADD.
"""
from __future__ import annotations

import torch

from adapters.diffusion import process
from adapters.diffusion.common import DiffusionAdapter, DiffusionBudget, DiffusionParams
from adapters.diffusion.model import Denoiser, NetConfig
from adapters.diffusion.params import MDMParams
from bench.registry import register_adapter


@register_adapter("mdm")
class MDMAdapter(DiffusionAdapter):
    """Masked diffusion model (MDLM-style) with an ancestral sampler at any number of steps."""

    Params = MDMParams

    def build(self, cfg: NetConfig) -> dict[str, torch.nn.Module]:
        self.den = Denoiser(cfg)
        return {"denoiser": self.den}

    def loss(self, x0, y, kl_weight, gen):
        nll, parts = process.mdm_loss(self.den, x0, y, self.params.schedule, self.mask_id, gen)
        return nll, {"masked_frac": parts["masked"]}

    def chain_logits(self, x_t, y, k, state, gen):
        return self.den(x_t, y)

    def nelbo(self, x0, y, gen):
        return process.mdm_loss(self.den, x0, y, self.params.schedule, self.mask_id, gen)[0]

    def train_key_extra(self) -> dict:
        return {"compute_match": self.params.compute_match,
                **({"match_z_dim": self.params.match_z_dim} if self.params.compute_match != "none" else {})}

    def train_steps(self, budget: DiffusionBudget) -> int:
        if self.params.compute_match == "none":
            return budget.train_steps
        from adapters.diffusion.vadd import VADDAdapter, VADDParams

        shared = {k: v for k, v in self.params.model_dump().items() if k in DiffusionParams.model_fields}
        twin = VADDAdapter(VADDParams(**shared, z_dim=self.params.match_z_dim), self.seed)
        twin.levels, twin.shape, twin.n_tokens = self.levels, self.shape, self.n_tokens
        twin.num_classes, twin.mask_id = self.num_classes, self.mask_id
        twin.nets = twin.build(twin.net_config())
        ratio = twin.step_flops(budget.batch_size) / self.step_flops(budget.batch_size)
        self.flops_ratio = ratio
        return max(1, round(budget.train_steps * ratio))
