# The two commands: `make bench` (default suite: fmnist) and `make test`.
PY      := .venv/bin/python
SUITE   ?= fmnist
SEEDS   ?=
METHODS ?=
export MLFLOW_DISABLE_TELEMETRY := true
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install bench test leaderboard ui clean-results

install: .venv/.installed

.venv/.installed: scripts/install.sh constraints.txt requirements.txt pyproject.toml
	bash scripts/install.sh

bench: install
	$(PY) -m bench.cli run $(SUITE) $(if $(SEEDS),--seeds $(SEEDS)) $(if $(METHODS),--methods $(METHODS))

test: install
	$(PY) -m pytest

leaderboard: install
	$(PY) -m bench.cli leaderboard $(SUITE)

ui: install
	$(PY) -m bench.cli ui
