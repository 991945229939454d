#!/usr/bin/env bash
# Create a virtual environment and install what the project needs from one of its locks:
#   gpu           (an NVIDIA GPU answers nvidia-smi): locks/gpu.txt, which is requirements.txt
#                 resolved: Unsloth 2026.10.9 with trl 1.15.0, transformers 5.17.0, CUDA torch 2.14.
#   cpu           (everything else): torch 2.13.0 (CPU build) first, then locks/cpu.txt, then
#                 Unsloth without its dependencies (its CPU mode).
#   cpu-gpu-libs  the CPU install with the GPU lock's transformers/trl/datasets/peft/accelerate
#                 (locks/cpu-gpu-libs.txt): `make test-gpu-libs` runs the tests on it.
# Settings (environment):
#   FINETUNING_INSTALL=cpu|gpu|cpu-gpu-libs   override the choice above
#   FINETUNING_INSTALLER=uv|pip               uv is used when it can be had (installed into the
#                                             environment if it is not on PATH), else pip
#   FINETUNING_TORCH_INDEX=URL                where the CPU path takes torch from, e.g.
#                                             https://download.pytorch.org/whl/cpu (pip's own
#                                             configuration when unset)
#   VENV=.venv   PYTHON=python3.11
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
case "$mode" in
  cpu|gpu|cpu-gpu-libs) ;;
  *) echo "setup: FINETUNING_INSTALL must be cpu, gpu or cpu-gpu-libs, not '$mode'" >&2; exit 1;;
esac
lock="locks/$mode.txt"
installer=${FINETUNING_INSTALLER:-auto}
case "$installer" in auto|uv|pip) ;;
  *) echo "setup: FINETUNING_INSTALLER must be uv or pip, not '$installer'" >&2; exit 1;;
esac

stamp="$VENV/.finetuning-installed"
want="$mode $(cat "$lock" pyproject.toml scripts/setup_venv.sh | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $PYTHON"
  "$PYTHON" -m venv "$VENV"
fi
LOG="$VENV/setup.log"
: > "$LOG"
run() {  # quiet unless it fails; the full output is kept in $VENV/setup.log
  if ! "$@" >>"$LOG" 2>&1; then
    grep -v "^WARNING: Location" "$LOG" | tail -n 30 >&2
    echo "setup: '$*' failed; full log in $LOG" >&2
    exit 1
  fi
}
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

UV=""
if [ "$installer" != pip ]; then
  if command -v uv >/dev/null 2>&1; then UV=$(command -v uv)
  elif [ -x "$VENV/bin/uv" ] || "${PIP[@]}" install -q uv >>"$LOG" 2>&1; then UV="$VENV/bin/uv"
  elif [ "$installer" = uv ]; then
    echo "setup: FINETUNING_INSTALLER=uv but uv is not on PATH and 'pip install uv' failed" \
         "(log in $LOG); unset it to install with pip" >&2
    exit 1
  fi
fi
install() {  # install ARGS...: with uv into $VENV, or with its pip
  if [ -n "$UV" ]; then run "$UV" pip install --python "$VENV/bin/python" "$@"
  else run "${PIP[@]}" install -q "$@"; fi
}

echo "setup: installing the $mode path into $VENV with $([ -n "$UV" ] && echo uv || echo pip) (from $lock)"
start=$(date +%s)
if [ "$mode" = gpu ]; then
  install -r "$lock"
else
  # torch by itself, with pip (it honours the machine's pip configuration and local wheels): a
  # torch pulled in by the lock would be the CUDA build on Linux
  torch_index=()
  [ -n "${FINETUNING_TORCH_INDEX:-}" ] && torch_index=(--index-url "$FINETUNING_TORCH_INDEX")
  if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
    run "${PIP[@]}" install -q "${torch_index[@]}" torch==2.13.0
  fi
  install -r "$lock"
  install --no-deps unsloth==2026.10.9 unsloth_zoo==2026.10.9
fi
install --no-deps -e .
echo "$want" > "$stamp"
echo "setup: done in $(( $(date +%s) - start )) s"
