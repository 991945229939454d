"""``make demo``: run the Mariya notebook headless and say where the report is.

On a machine without an NVIDIA GPU it runs in smoke mode (the tiny Qwen2.5 stand-in); with one,
it fine-tunes the real Qwen2.5-3B-Instruct.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time

from helpers import models
from helpers.notebook import ROOT
from helpers.notebooks import execute

NOTEBOOK = ROOT / "NoteBooks" / "Mariya" / "Qwen2.5_3B_Mariya_FineTuning.ipynb"


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("papermill").setLevel(logging.INFO)
    smoke = models.smoke_mode() or not models.cuda_available()
    choice = models.choose("qwen2.5-3b", smoke)
    out_dir = ROOT / "outputs" / f"mariya-{choice.profile.name}"
    executed = ROOT / "outputs" / "notebooks" / "Qwen2.5_3B_Mariya_FineTuning.executed.ipynb"
    print(f"Demo: the Mariya notebook on {choice.describe()}"
          + (" (no NVIDIA GPU found, so smoke mode)" if smoke and not models.smoke_mode() else ""))
    if out_dir.exists():  # a demo starts clean (a real run would resume from its checkpoints)
        shutil.rmtree(out_dir)
    t0 = time.time()
    execute(NOTEBOOK, executed, {"smoke": smoke, "output_dir": str(out_dir)}, log_output=True)
    record = json.loads((out_dir / "run.json").read_text())
    m = record["metrics"]
    print(f"\nDone in {time.time() - t0:.0f} s.")
    print(f"  fact recall: base {m['fact_recall_base']:.0%} -> tuned {m['fact_recall_tuned']:.0%}")
    print(f"  executed notebook (the report): {executed.relative_to(ROOT)}")
    print(f"  run record: {(out_dir / 'run.json').relative_to(ROOT)}")
    print(f"  adapter: {(out_dir / 'adapter').relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
