#!/usr/bin/env bash
# CI's check of the install files, without installing anything and without downloading a wheel
# (uv reads the packages' metadata from the index):
#   1. the GPU install (requirements.txt) resolves for Python 3.11 and 3.12 on Linux x86_64;
#   2. every lock in locks/ is what scripts/lock.sh makes from today's input files.
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-}
if [ -z "$UV" ]; then
  if [ -x .venv/bin/uv ]; then UV=.venv/bin/uv; elif command -v uv >/dev/null; then UV=uv; else
    echo "check-locks: needs uv (pip install uv, or make setup, which installs it into .venv)" >&2
    exit 1
  fi
fi
case "$UV" in /*) ;; */*) UV="$PWD/$UV" ;; *) UV=$(command -v "$UV") ;; esac
for py in 3.11 3.12; do
  if ! out=$("$UV" pip compile requirements.txt --python-version "$py" \
      --python-platform x86_64-manylinux_2_28 --quiet --no-header 2>&1); then
    echo "$out" >&2
    echo "check-locks: the GPU install (requirements.txt) does not resolve for Python $py on Linux x86_64" >&2
    exit 1
  fi
  echo "check-locks: GPU install resolves for Python $py on Linux x86_64:" \
    "$(grep -E '^(unsloth|torch|transformers|trl|datasets)==' <<<"$out" | tr '\n' ' ')"
done
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cp -r scripts requirements.txt requirements-cpu.txt "$tmp/"
mkdir "$tmp/locks"; cp locks/*.txt "$tmp/locks/"
(cd "$tmp" && UV="$UV" bash scripts/lock.sh >/dev/null)
if ! diff -ru locks "$tmp/locks"; then
  echo "check-locks: locks/ is out of date with the requirements files: run bash scripts/lock.sh" >&2
  exit 1
fi
echo "check-locks: locks/gpu.txt, cpu.txt and cpu-gpu-libs.txt match their inputs"
