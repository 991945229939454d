"""Print a uv-compiled lock without torch and the CUDA packages only torch needs.

The CPU path installs torch by itself (the CPU build) before the lock; left in the lock, torch's
Linux metadata would pull several GB of nvidia-* wheels.
"""
import re
import sys

CUDA_ONLY = re.compile(r"^(torch|triton|nvidia-[\w-]+|cuda-[\w-]+)$")


def main(path: str) -> None:
    keep = True
    for line in open(path, encoding="utf-8"):
        if line.strip() and not line.startswith((" ", "#")):
            name = re.split(r"[=<>!~; ]", line, maxsplit=1)[0].lower()
            keep = not CUDA_ONLY.match(name)
        if keep:
            sys.stdout.write(line)


if __name__ == "__main__":
    main(sys.argv[1])
