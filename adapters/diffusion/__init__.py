"""Discrete diffusion on pixels as tokens: ``mdm`` (MDLM-style masked diffusion), ``vadd`` (VADD,
arXiv 2505.17384: MDM + a Gaussian latent via a recognition model) and ``vae`` (the same networks
without diffusion, a one-step control). Shared parts: :mod:`.model`, :mod:`.process`, :mod:`.common`."""
