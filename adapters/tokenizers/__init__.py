"""The tokenizer family: a discrete image tokenizer trained first, then a class-conditional AR prior
over its frozen token sequences; methods differ in how the tokenizer's codes are constrained or
trained. Adapters: ``vq`` (the uniform-codebook baseline, :mod:`.vq`), ``vcq`` (variable codebook
sizes per position, :mod:`.vcq`), ``wartok`` (:mod:`.wartok`, a Wasserstein-gradient-flow
prior-consistency term) and ``prologue`` (:mod:`.prologue`, prologue tokens before the visual ones).
Shared, non-adapter pieces: :mod:`.vq_tokenizer` (the 1D VQ tokenizer) and :mod:`.ar_prior` (the AR
prior every method samples with).
"""
