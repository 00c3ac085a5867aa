"""Method adapters, one subpackage per method family, one module per method in it.

* :mod:`adapters.tokenizers` -- image tokenizers + AR priors (``vq``, ``vcq``, ``wartok``, ``prologue``)
* :mod:`adapters.peft`       -- parameter-efficient fine-tuning arms (``lora``, ``layer_card``,
  ``prefix_tuning``, ``prefix_tuning_plus``)
* :mod:`adapters.llm_internals` -- tiny LMs pre-trained here: ``llama_baseline``, ``headwise_rmsnorm``,
  ``seedprint_matrix``, ``local_pretrained`` (attention sinks, SeedPrint fingerprints)

Each adapter registers with :func:`bench.registry.register_adapter`; :func:`bench.registry.load_all`
imports every module of every family (modules whose name starts with ``_`` are skipped).
"""
