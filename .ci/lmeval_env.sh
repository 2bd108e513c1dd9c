#!/usr/bin/env bash
# Create the separate lm-evaluation-harness (CPU) environment benchmarks/lmeval_check.py and
# tests/engines/test_lmeval_peer.py use.
#
# lm-eval is a peer check of sprint_lab's head ablation: it runs GSM8K (gsm8k_cot) on the
# float32 base model plus the PEFT LoRA adapters sl.export_head_adapters writes. It lives in its
# own venv, .venvs/lmeval (repo-relative, git-ignored), so its dependency pins never touch the
# main environment, and is reached as an `lm_eval` subprocess.
# Idempotent: when the venv already imports lm_eval, transformers and peft at the pinned versions
# this returns at once. Override the location with SPRINT_LAB_LMEVAL_VENV; the python it prints
# last is that venv's interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${SPRINT_LAB_LMEVAL_VENV:-.venvs/lmeval}"
torch_version="2.13.0"
lmeval_version="0.4.13"
transformers_version="5.23.0"
peft_version="0.21.2"  # the main environment's pin (pyproject.toml [dev])
py="$venv/bin/python"

ready() {
  [ -x "$py" ] && "$py" - "$lmeval_version" "$transformers_version" "$peft_version" "$torch_version" \
    <<'PY' >/dev/null 2>&1
import importlib.metadata as md, sys
want = dict(zip(("lm_eval", "transformers", "peft", "torch"), sys.argv[1:]))
for name, version in want.items():
    have = md.version(name)
    assert have.split("+")[0] == version, (name, have, version)
import lm_eval  # noqa: F401
import lm_eval.models.huggingface  # noqa: F401  (imports transformers and peft)
import peft  # noqa: F401
PY
}

if ready; then
  echo "lmeval venv ready: $py"
  exit 0
fi

if [ ! -x "$py" ]; then
  python3 -m venv "$venv"
fi
"$py" -m pip install --quiet --upgrade pip
"$py" -m pip install --quiet "torch==$torch_version" --index-url https://download.pytorch.org/whl/cpu \
  || "$py" -m pip install --quiet "torch==$torch_version"
"$py" -m pip install --quiet "lm-eval==$lmeval_version" "transformers==$transformers_version" \
  "peft==$peft_version"

if ! ready; then
  echo "lmeval venv at $venv is incomplete after install" \
    "(lm-eval==$lmeval_version, transformers==$transformers_version, peft==$peft_version," \
    "torch==$torch_version)" >&2
  exit 1
fi
echo "lmeval venv ready: $py"
