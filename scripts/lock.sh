#!/usr/bin/env bash
# Resolve the install files into locks (needs uv: `pip install uv`). Existing pins are kept where
# they still fit; pass --upgrade to take the newest releases the ranges allow.
#   locks/gpu.txt           requirements.txt, for Linux x86_64 with CUDA, Python 3.11 and 3.12
#   locks/cpu.txt           requirements-cpu.txt without torch and its CUDA packages (torch is
#                           installed first, from the CPU build, by scripts/setup_venv.sh)
#   locks/cpu-gpu-libs.txt  the CPU set with the GPU lock's transformers, trl, datasets, peft and
#                           accelerate: the tests run on it to check the versions GPU users get
# scripts/check_locks.sh proves each lock still matches its input and the GPU install resolves.
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-uv}
mkdir -p locks
compile() {  # compile OUTPUT INPUT [uv options...]
  local out=$1 in=$2; shift 2
  "$UV" pip compile "$in" --universal --python-version 3.11 --quiet --no-header \
    --output-file "$out" "$@"
}
compile locks/gpu.txt requirements.txt "$@"
# the five libraries the GPU path pins, as overrides for the CPU set
grep -E '^(transformers|trl|datasets|peft|accelerate)==' locks/gpu.txt | sed 's/ *;.*//' \
  > locks/gpu-libs.txt
for name in cpu cpu-gpu-libs; do
  extra=()
  [ "$name" = cpu-gpu-libs ] && extra=(--override locks/gpu-libs.txt)
  [ -f "locks/$name.txt" ] && cp "locks/$name.txt" "locks/.$name.full.txt"
  compile "locks/.$name.full.txt" requirements-cpu.txt "${extra[@]}" "$@"
  python3 scripts/drop_torch.py "locks/.$name.full.txt" > "locks/$name.txt"
  rm -f "locks/.$name.full.txt"
done
echo "lock: wrote locks/gpu.txt locks/cpu.txt locks/cpu-gpu-libs.txt"
