"""``make demo``: the Mariya notebook and a whole persona pipeline, headless.

1. Mariya: teach Qwen2.5 facts it cannot know (fact recall before and after).
2. Maren Holloway, the invented author of the project's sample book: books to training data
   (rule-based questions, no API key), V2 fine-tuning of Qwen3-14B, then the comparison of the
   base and tuned models.

Without an NVIDIA GPU every model is its family's tiny stand-in (smoke mode) and the two run
side by side, one core each: first the two pre-trained stand-ins are built (once; cached
afterwards), then Mariya runs here while Maren Holloway's pipeline runs in a child process
(its cell output goes to a log file). With a GPU the real models are trained, one after the
other. Prints where each executed notebook (the report) is.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
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
#: the stand-ins the demo runs on: Mariya on Qwen2.5's, Maren Holloway's V2 on Qwen3's
STANDINS = ("tiny-qwen2.5", "tiny-qwen3")
#: one torch thread per side when the two halves share the machine
_ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _show(path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _run(name: str, notebook, params: dict, *, echo: bool = True) -> tuple[str, float]:
    out = EXECUTED / f"{name}.executed.ipynb"
    print(f"\n=== {name} ===", flush=True)
    t0 = time.time()
    execute(notebook, out, params, log_output=echo, progress=False)
    return _show(out), time.time() - t0


def persona_pipeline(smoke: bool, reports_file: str | None = None) -> list[tuple[str, float]]:
    """Maren Holloway's DataPrep, V2 fine-tuning and comparison notebooks, in order; with
    ``reports_file`` the (notebook, seconds) list is also written there as JSON (the demo runs
    this in a child process)."""
    run = default_output_dir("MarenHolloway-v2", models.choose("qwen3-14b", smoke))
    shutil.rmtree(run, ignore_errors=True)  # a demo starts clean (a real run would resume)
    reports = [_run(name, PERSONA / f"{name}.ipynb", {"smoke": smoke}) for name in PIPELINE]
    if reports_file:
        with open(reports_file, "w") as fh:
            json.dump(reports, fh)
    return reports


def _build_standins(t_start: float) -> None:
    """Both pre-trained stand-ins at once, one core each (about two minutes on a first run)."""
    builds = [standins.build_in_background([name]) for name in STANDINS]
    if any(builds):
        print("Building the stand-ins " + ", ".join(STANDINS) + " side by side (once; cached "
              "afterwards)", flush=True)
    for proc in filter(None, builds):
        if proc.wait() != 0:
            raise RuntimeError("Building a stand-in failed (see the log above); run "
                               "`python -c \"from helpers.models import standins; "
                               "standins.ensure('tiny-qwen3')\"` to see why.")
    if any(builds):
        print(f"Stand-ins ready in {time.time() - t_start:.0f} s", flush=True)


def _start_persona_child(smoke: bool):
    """Maren Holloway's pipeline in a child process on one thread; returns (process, log path,
    reports path)."""
    EXECUTED.mkdir(parents=True, exist_ok=True)
    log_path, reports_path = EXECUTED / "demo-MarenHolloway.log", EXECUTED / "demo-MarenHolloway.json"
    reports_path.unlink(missing_ok=True)
    code = ("import logging, sys; logging.basicConfig(level=logging.INFO, format='%(message)s', "
            "stream=sys.stdout); from helpers.notebooks import demo; "
            f"demo.persona_pipeline({smoke!r}, {str(reports_path)!r})")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **_ONE_THREAD}, cwd=str(ROOT))
    print(f"Maren Holloway's pipeline runs beside Mariya, one core each; its log: "
          f"{_show(log_path)}", flush=True)
    return proc, log_path, reports_path


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
    child = None
    if smoke:
        _build_standins(t_start)
        child = _start_persona_child(smoke)
        os.environ.update(_ONE_THREAD)  # Mariya's kernel, beside the child

    # 1. Mariya
    mariya_run = default_output_dir("mariya", models.choose("qwen2.5-3b", smoke))
    shutil.rmtree(mariya_run, ignore_errors=True)  # a demo starts clean (a real run would resume)
    reports = [_run("Qwen2.5_3B_Mariya_FineTuning", MARIYA,
                    {"smoke": smoke, "output_dir": str(mariya_run)})]
    m = json.loads((mariya_run / "run.json").read_text())["metrics"]
    mariya_line = (f"fact recall on trained phrasings: base {m['fact_recall_base']:.0%} -> tuned "
                   f"{m['fact_recall_tuned']:.0%}; on unseen phrasings: base "
                   f"{m.get('fact_recall_base_unseen', float('nan')):.0%} -> tuned "
                   f"{m.get('fact_recall_tuned_unseen', float('nan')):.0%}")
    print(mariya_line)

    # 2. the persona pipeline on the sample book
    if child:
        proc, log_path, reports_path = child
        print("\nWaiting for Maren Holloway's pipeline ...", flush=True)
        if proc.wait() != 0 or not reports_path.is_file():
            print(log_path.read_text()[-4000:])
            raise RuntimeError(f"Maren Holloway's pipeline failed: the end of its log is above "
                               f"(all of it: {_show(log_path)}; the executed notebooks show the "
                               f"failing cell).")
        reports += [tuple(r) for r in json.loads(reports_path.read_text())]
    else:
        reports += persona_pipeline(smoke)

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
    persona_run = default_output_dir("MarenHolloway-v2", models.choose("qwen3-14b", smoke))
    print(f"Runs: {_show(mariya_run)}, {_show(persona_run)}; comparison tables: {_show(comparison)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
