"""``make demo``: a whole persona pipeline and the Mariya notebook, headless.

1. Maren Holloway, the invented author of the project's sample book: books to training data
   (rule-based questions, no API key), V2 fine-tuning of Qwen3-14B, then the comparison of the
   base and tuned models.
2. Mariya: teach Qwen2.5 facts it cannot know (fact recall before and after).

Without an NVIDIA GPU every model is its family's tiny stand-in (smoke mode); with one, the real
models are trained. On a first run the pre-trained Qwen2.5 stand-in (about two minutes on one
core) builds in a child process while step 1 runs on the other core, one thread; Mariya then
gets every core. Prints where each executed notebook (the report) is.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
import time

from helpers import models
from helpers.data import persona as personas
from helpers.evaluation import compare
from helpers.models import standins
from helpers.notebooks import NOTEBOOKS_DIR, execute
from helpers.notebooks.setup import ROOT, work_dir
from helpers.pipeline.finetune import default_output_dir

MARIYA = NOTEBOOKS_DIR / "Mariya" / "Qwen2.5_3B_Mariya_FineTuning.ipynb"
PERSONA = NOTEBOOKS_DIR / "MarenHolloway"
PIPELINE = ("MarenHolloway_DataPrep", "Qwen3_14B_MarenHolloway_V2_FineTuning",
            "AllModels_MarenHolloway_Comparison")
EXECUTED = work_dir() / "outputs" / "notebooks"
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _show(path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _run(name: str, notebook, params: dict) -> tuple[str, float]:
    out = EXECUTED / f"{name}.executed.ipynb"
    print(f"\n=== {name} ===", flush=True)
    t0 = time.time()
    execute(notebook, out, params, log_output=True)
    return _show(out), time.time() - t0


@contextlib.contextmanager
def _threads(n: int | None):
    """Run the notebooks started inside on ``n`` torch threads (their kernels inherit the
    environment); None leaves the machine's default."""
    saved = {k: os.environ.get(k) for k in _THREAD_VARS}
    if n:
        os.environ.update({k: str(n) for k in _THREAD_VARS})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(prog="python -m helpers.demo", description=__doc__.split("\n\n")[0],
                            epilog="Runs the notebooks in smoke mode without an NVIDIA GPU; "
                                   "FINETUNING_SMOKE=1 forces it.").parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("papermill").setLevel(logging.INFO)
    smoke = models.smoke_mode() or not models.cuda_available()
    print("Demo: " + ("smoke mode, tiny stand-ins on the CPU (no NVIDIA GPU found)" if smoke
                      and not models.smoke_mode() else "smoke mode" if smoke else "real models on the GPU"))
    t_start = time.time()
    reports = []
    build = None
    if smoke:  # tiny-qwen2.5 (pre-trained, ~2 min on one core) builds while the persona runs
        build = standins.build_in_background(["tiny-qwen2.5"])
        if build:
            print("Building the stand-in tiny-qwen2.5 on one core (once; cached afterwards) "
                  "while Maren Holloway's pipeline runs on the other", flush=True)

    # 1. the persona pipeline on the sample book (one thread while the build runs beside it)
    persona_run = default_output_dir("MarenHolloway-v2", models.choose("qwen3-14b", smoke))
    shutil.rmtree(persona_run, ignore_errors=True)  # a demo starts clean (a real run would resume)
    with _threads(1 if build else None):
        for name in PIPELINE:
            reports.append(_run(name, PERSONA / f"{name}.ipynb", {"smoke": smoke}))
    if build:
        if build.wait() != 0:
            raise RuntimeError("Building a stand-in failed (see the log above); run "
                               "`python -c \"from helpers.models import standins; "
                               "standins.ensure('tiny-qwen2.5')\"` to see why.")
        print(f"Stand-in tiny-qwen2.5 ready after {time.time() - t_start:.0f} s", flush=True)

    # 2. Mariya, on every core
    mariya_run = default_output_dir("mariya", models.choose("qwen2.5-3b", smoke))
    shutil.rmtree(mariya_run, ignore_errors=True)
    reports.insert(0, _run("Qwen2.5_3B_Mariya_FineTuning", MARIYA,
                           {"smoke": smoke, "output_dir": str(mariya_run)}))
    m = json.loads((mariya_run / "run.json").read_text())["metrics"]
    mariya_line = (f"fact recall on trained phrasings: base {m['fact_recall_base']:.0%} -> tuned "
                   f"{m['fact_recall_tuned']:.0%}; on unseen phrasings: base "
                   f"{m.get('fact_recall_base_unseen', float('nan')):.0%} -> tuned "
                   f"{m.get('fact_recall_tuned_unseen', float('nan')):.0%}")
    print(mariya_line)

    comparison = compare.default_output_dir(personas.load(PERSONA), smoke)
    summary = json.loads((comparison / "comparison.json").read_text())["summary"]
    print(f"\nDone in {time.time() - t_start:.0f} s. Mariya {mariya_line}.")
    print("Comparison (Maren Holloway, base vs V2):")
    for metric in ("tfidf", "delta", "ngram_overlap", "perplexity"):
        cells = [f"{r['variant']} {r['value']:.3g}" for r in summary if r["metric"] == metric]
        print(f"  {metric:>14}: " + ", ".join(cells))
    print("Executed notebooks (the reports; each also as .html beside it):")
    for path, seconds in reports:
        print(f"  {path}  ({seconds:.0f} s)")
    print(f"Runs: {_show(mariya_run)}, {_show(persona_run)}; comparison tables: {_show(comparison)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
