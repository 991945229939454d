#!/usr/bin/env bash
# Create .venv and install everything the project needs, choosing the install path:
#   GPU path (an NVIDIA GPU answers nvidia-smi): requirements.txt (Unsloth, CUDA torch, ...).
#   CPU path (everything else): torch==2.13.0 CPU build, requirements-cpu.txt under
#     constraints-cpu.txt, and Unsloth without its dependencies (its CPU mode).
# Override the choice with FINETUNING_INSTALL=cpu or FINETUNING_INSTALL=gpu.
# Idempotent: a stamp file records what was installed; rerunning with unchanged files is instant.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-}
if [ -z "$PYTHON" ]; then
  for cand in python3.11 python3.12 python3; do
    if command -v "$cand" >/dev/null 2>&1; then PYTHON=$cand; break; fi
  done
fi
[ -n "$PYTHON" ] || { echo "setup: no python3 found; install Python 3.11 or 3.12" >&2; exit 1; }

mode=${FINETUNING_INSTALL:-}
if [ -z "$mode" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then mode=gpu; else mode=cpu; fi
fi
case "$mode" in cpu|gpu) ;; *) echo "setup: FINETUNING_INSTALL must be cpu or gpu, not '$mode'" >&2; exit 1;; esac

stamp="$VENV/.finetuning-installed"
want="$mode $(cat requirements.txt requirements-cpu.txt constraints-cpu.txt pyproject.toml | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi
LOG="$VENV/setup.log"
: > "$LOG"
pip_install() {  # quiet unless it fails; the full output is kept in .venv/setup.log
  if ! "$VENV/bin/python" -m pip --disable-pip-version-check install -q "$@" >>"$LOG" 2>&1; then
    grep -v "^WARNING: Location" "$LOG" | tail -n 30 >&2
    echo "setup: 'pip install $*' failed; full log in $LOG" >&2
    exit 1
  fi
}
pip_install --upgrade pip

echo "setup: installing the $mode path into $VENV (a few minutes the first time)"
start=$(date +%s)
if [ "$mode" = gpu ]; then
  pip_install -r requirements.txt
else
  pip_install torch==2.13.0
  pip_install -c constraints-cpu.txt -r requirements-cpu.txt
  pip_install --no-deps unsloth==2026.10.9 unsloth_zoo==2026.10.9
fi
pip_install --no-deps -e .
echo "$want" > "$stamp"
echo "setup: done in $(( $(date +%s) - start )) s"
