"""Where things are: the project root, the work folder for generated files, run folders.

Inputs named in parameters are relative to the project root (:func:`path`); everything the
pipeline writes goes under :func:`work_dir` (the root, or ``$FINETUNING_WORKDIR``).
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: the environment variable that moves every generated file (a scratch disk, a test's folder)
WORKDIR_ENV = "FINETUNING_WORKDIR"


def work_dir() -> Path:
    """Where generated files go: ``outputs/``, ``qa_dataset/`` and ``comparison_cache_all_models/``
    live here. The project root unless ``FINETUNING_WORKDIR`` names another folder (a scratch disk,
    or a test's temporary folder)."""
    env = os.environ.get(WORKDIR_ENV)
    return Path(env).expanduser().resolve() if env else ROOT


def path(p: str | os.PathLike | None) -> Path | None:
    """A path from a notebook parameter: absolute as given, else relative to the project root
    (so the notebook runs the same from JupyterLab, nbconvert and papermill, whatever the cwd)."""
    if p is None or str(p) == "":
        return None
    p = Path(p).expanduser()
    return p if p.is_absolute() else ROOT / p


def run_dir(name: str, asked_for: str, smoke: bool) -> Path:
    """``outputs/<name>-<model asked for>``, with ``-smoke`` in smoke mode: named after the model
    asked for, so the Qwen3-14B and Qwen3-32B runs stay apart even when both use the same stand-in
    (what really ran is in run.json). The comparison finds runs by this name."""
    return work_dir() / "outputs" / (f"{name}-{asked_for}" + ("-smoke" if smoke else ""))
