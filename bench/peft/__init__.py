"""PEFT cost-vs-accuracy pieces for the Qwen3 family (issue 5).

* :mod:`bench.peft.qwen3_tiny`   -- a small ``Qwen3Config`` model pre-trained briefly here on local text
* :mod:`bench.peft.base_models`  -- ``load_base_model``: ``qwen3-tiny`` (cached) or ``qwen3-8b`` (user path)
* :mod:`bench.peft.tasks`        -- deterministic generated tasks (JSONL) and lm-eval task YAMLs
* :mod:`bench.peft.train`        -- the one training loop every arm uses
* :mod:`bench.peft.cost`         -- the cost record (params, bytes, s/step, memory, FLOPs)
* :mod:`bench.peft.evaluate`     -- accuracy through lm-eval's ``HFLM`` over the adapted model object
* :mod:`bench.peft.layer_card`   -- the Layer Card diagnostic (resnorm, activation energy, coupling, cost)
* :mod:`bench.peft.prefix_plus`  -- the Prefix-Tuning+ module (trainable memory read by phi(q))
"""
