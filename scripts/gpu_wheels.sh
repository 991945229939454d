#!/usr/bin/env bash
# Download, on a machine WITH internet, the wheels `make gpu-check` (scripts/gpu_check.py) needs on
# an offline CUDA machine whose image already has torch, transformers, accelerate and peft but
# not TRL, Unsloth or bitsandbytes. Copy the project with gpu_wheels/ to the GPU machine, then
# either `make gpu-check` (it installs them with --install-wheels when they are missing) or:
#
#   pip install --no-index --no-deps --find-links gpu_wheels -r gpu_wheels/requirements.txt
#
# --no-deps on purpose: the wheels are downloaded without their dependencies (torch, triton,
# xformers... are the image's), so pip must not try to resolve them offline.
#
# What is fetched (versions from locks/gpu.txt, the GPU lock):
#   trl, unsloth, unsloth_zoo, bitsandbytes   what the check imports
#   cut_cross_entropy                         unsloth_zoo's fused loss (imported inside try:, used when present)
#   gguf                                      our GGUF writer (helpers/export.py)
#   datasets, dill, multiprocess, xxhash, fsspec
#                                             TRL and unsloth_zoo import datasets unconditionally;
#                                             pyarrow and pandas (datasets' big deps, ~60 MB) only
#                                             with WITH_PYARROW=1
# Not fetched: xformers (its wheel pins one torch build, not the image's; Unsloth runs without
# it), torchao (imported only for QAT/fp8), msgspec (vLLM path only), tyro and hf_transfer
# (declared by Unsloth, imported nowhere outside its Studio app), diffusers.
#
# Two wheels are repacked to travel light (each drops files and their RECORD lines, so pip
# installs it as usual):
#   unsloth       without studio/ (its web app, most of the 28.6 MB; nothing under unsloth/ or
#                 unsloth_zoo/ imports it: only Studio's "decision" models read a file there, by path)
#   bitsandbytes  with only its CUDA 13 and CPU native libraries (the image's torch is CUDA 13;
#                 BNB_KEEP="cuda12" or similar keeps others too)
#
# Environment: OUT (default gpu_wheels), PY_VERSIONS (default "3.11 3.12": the pure wheels that
# differ per Python), PYTHON (default python3), WITH_PYARROW=1, BNB_KEEP (default cuda13).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_wheels}
PY_VERSIONS=${PY_VERSIONS:-"3.11 3.12"}
PYTHON=${PYTHON:-python3}
BNB_KEEP=${BNB_KEEP:-cuda13}
LOCK=locks/gpu.txt

pin() {  # pin NAME DEFAULT: the version locks/gpu.txt pins for NAME (- and _ alike), else DEFAULT
    local v
    v=$(grep -iE "^$(echo "$1" | sed 's/[-_]/[-_]/g')==" "$LOCK" 2>/dev/null | head -1 | sed -E 's/^[^=]+==([^ ;]+).*/\1/')
    echo "${v:-$2}"
}

PURE=(
    "trl==$(pin trl 1.15.0)"
    "unsloth==$(pin unsloth 2026.10.9)"
    "unsloth_zoo==$(pin unsloth-zoo 2026.10.9)"
    "cut_cross_entropy==$(pin cut-cross-entropy 25.1.1)"
    "gguf==$(pin gguf 0.19.0)"
    "datasets==$(pin datasets 4.8.5)"
    "dill==$(pin dill 0.4.1)"
    "fsspec==$(pin fsspec 2026.2.0)"
)
PER_PYTHON=(
    "multiprocess==$(pin multiprocess 0.70.19)"
    "xxhash==$(pin xxhash 4.1.0)"
)
if [[ "${WITH_PYARROW:-}" == 1 ]]; then
    PER_PYTHON+=("pyarrow==$(pin pyarrow 26.0.1)" "pandas==$(pin pandas 3.1.1)")
fi
BNB="bitsandbytes==$(pin bitsandbytes 0.50.2)"

rm -rf "$OUT"
mkdir -p "$OUT"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
PLAT=(--platform manylinux_2_34_x86_64 --platform manylinux_2_31_x86_64 --platform manylinux_2_28_x86_64
      --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
      --platform linux_x86_64 --only-binary=:all:)

echo "Downloading ${PURE[*]} $BNB"
"$PYTHON" -m pip download -q --no-deps -d "$TMP/raw" "${PURE[@]}" "$BNB" "${PLAT[@]}" --python-version 3.11
for v in $PY_VERSIONS; do
    echo "Downloading for Python $v: ${PER_PYTHON[*]}"
    "$PYTHON" -m pip download -q --no-deps -d "$TMP/raw" "${PER_PYTHON[@]}" "${PLAT[@]}" --python-version "$v"
done

# repack WHEEL KEEP_PYTHON_EXPR: keep the entries for which the expression (on `name`) is true,
# and drop the removed files' lines from RECORD
repack() {
    "$PYTHON" - "$1" "$2" "$OUT" <<'PY'
import csv, io, os, sys, zipfile
src, keep_expr, out = sys.argv[1], sys.argv[2], sys.argv[3]
keep = eval("lambda name: " + keep_expr)
dst = os.path.join(out, os.path.basename(src))
with zipfile.ZipFile(src) as zin:
    names = zin.namelist()
    kept = [n for n in names if n.endswith(".dist-info/RECORD") or keep(n)]
    dropped = sorted(set(names) - set(kept))
    record = next(n for n in names if n.endswith(".dist-info/RECORD"))
    rows = list(csv.reader(io.StringIO(zin.read(record).decode())))
    rows = [r for r in rows if r and r[0] not in dropped]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        for n in kept:
            info = zin.getinfo(n)
            data = buf.getvalue().encode() if n == record else zin.read(n)
            zout.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
print(f"  repacked {os.path.basename(src)}: {os.path.getsize(src)/1e6:.1f} MB -> "
      f"{os.path.getsize(dst)/1e6:.1f} MB ({len(dropped)} files dropped)")
PY
}

for whl in "$TMP"/raw/*.whl; do
    base=$(basename "$whl")
    case "$base" in
        unsloth-[0-9]*)
            repack "$whl" "not name.startswith('studio/')" ;;
        bitsandbytes-*)
            repack "$whl" "not (os.path.basename(name).startswith('libbitsandbytes_') and not any(k in os.path.basename(name) for k in ('cpu',) + tuple('$BNB_KEEP'.split())))" ;;
        *)
            cp "$whl" "$OUT/" ;;
    esac
done

# requirements.txt: every wheel here, pinned (pip picks the file for its own Python)
(cd "$OUT" && ls *.whl | sed -E 's/^([^-]+)-([^-]+)-.*/\1==\2/' | sort -u) > "$OUT/requirements.txt"
echo "Wheels in $OUT/:"
ls -l "$OUT" | awk 'NR>1 {printf "  %8.2f MB  %s\n", $5/1e6, $9}'
echo "Total: $(du -sh "$OUT" | cut -f1) ($(du -sb "$OUT" | cut -f1) bytes) in $OUT/"
echo "On the GPU machine: pip install --no-index --no-deps --find-links $OUT -r $OUT/requirements.txt"
