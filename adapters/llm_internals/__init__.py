"""The LLM-internals family: attention sinks, variance and convergence with head-wise
RMSNorm (arXiv:2605.06611), and SeedPrint initialisation fingerprints (arXiv:2509.26404,
2602.05927), on tiny byte-level Llama / Qwen3 models pre-trained here on local text.

* :mod:`.params`            -- light declarations (Params/Budget, adapters, local-model check; no torch)
* :mod:`.models`            -- tiny Llama/Qwen3 configs (transformers) and the head-wise RMSNorm hook
* :mod:`.corpus`            -- local byte corpora and the ``llm_text`` data set
* :mod:`.pretrain`          -- the one training recipe, cached by configuration hash
* :mod:`.internals`         -- α_k, sink rate, variance ratio, DomRatio, effective rank
* :mod:`.interventions`     -- self-only mask and variance amplification (vs plain rescale)
* :mod:`.headwise_rmsnorm`  -- adapters ``llama_baseline`` and ``headwise_rmsnorm``
* :mod:`.metric_internals`  -- metric ``llm_internals``
* :mod:`.seedprint`         -- the fingerprint test, empirical nulls, CKA, weight cosine
* :mod:`.seedprint_matrix`  -- adapter ``seedprint_matrix`` (a matrix of models in one cell)
* :mod:`.metric_seedprint`  -- metric ``seedprint`` (p-value matrix, accuracy, AUC, TPR@1%FPR)
* :mod:`.local_model`       -- adapter ``local_pretrained`` (a user's checkpoint, ``$LLM_INTERNALS_MODEL_DIR``)
* :mod:`.plots`             -- figures
"""
