"""Parameter sweeps: one notebook executed with papermill at every point of a grid of its
parameters, then a table and a plot across the points.

    python -m helpers.sweep NoteBooks/Mariya/Qwen2.5_3B_Mariya_FineTuning.ipynb --name mariya-r-lr \\
        --grid lora_r=8,16 --grid learning_rate=1e-3,5e-3 --set smoke=True --set epochs=2

Everything lands in ``outputs/sweeps/<name>/``: one folder per point (``lora_r=8__learning_rate=0.001/``)
that is the notebook's ``output_dir`` (so its ``run.json`` is there) and holds ``executed.ipynb``;
``sweep.json`` (rewritten atomically before and after every point); ``results.csv`` and
``results.png`` once the points are done.

Resuming: run the same command again. A point is skipped when its ``run.json`` says
``"status": "finished"`` and the parameters recorded in it and in ``executed.ipynb`` are the
point's; every other point runs again (never started, killed, or run with other parameters, for
example after a ``--set`` changed), except a point that *failed* with these same parameters: a
failure is usually deterministic (out of memory, a bad setting), so it is kept, shown as failed,
until ``--retry-failed``. A point stopped during training keeps its folder, so training resumes
from its last checkpoint when the settings and data match (``helpers.train``); a point that runs
again after its training had finished starts over in a fresh folder (the old one is moved to
``<point-id>.old-<time>``), because resuming from the final checkpoint would record no loss.

This module is the command line; the parts live beside it and are importable from here too:
``sweep_grid`` (the notebook's parameters, values, grid and point ids), ``sweep_record``
(:class:`Sweep`, ``sweep.json``, the table and plot), ``sweep_plan`` (what each point needs:
run, skip or keep) and ``sweep_run`` (:func:`run_sweep`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from helpers.notebooks.sweep_grid import (  # noqa: F401
    RESERVED,
    SweepError,
    _relative,
    coerce,
    notebook_parameters,
    parse_assignment,
    parse_fixed,
    parse_grid,
    point_id,
    points,
    read_grid_file,
    resolve_notebook,
)
from helpers.notebooks.sweep_plan import EXECUTED, executed_parameters, finished, plan  # noqa: F401
from helpers.notebooks.sweep_record import PREFERRED_METRICS, Sweep, default_root, load, sweep_folder  # noqa: F401
from helpers.notebooks.sweep_run import run_sweep


# -- command line -------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m helpers.sweep", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run a notebook with papermill over a grid of its parameters; resumable.",
        epilog="Values take the notebook's own parameter types (papermill --help-notebook NOTEBOOK "
               "lists them); None means the notebook's default.\nExample:\n  python -m helpers.sweep "
               "NoteBooks/Mariya/Qwen2.5_3B_Mariya_FineTuning.ipynb --name mariya-r-lr \\\n"
               "      --grid lora_r=8,16 --grid learning_rate=1e-3,5e-3 --set smoke=True --set epochs=2")
    p.add_argument("notebook", nargs="?", help="the .ipynb to run (or `notebook` in --grid-file)")
    p.add_argument("--name", help="the sweep's folder under --root (or `name` in --grid-file)")
    p.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2",
                   help="one axis of the grid (repeatable; NAME=V1,V2;NAME2=V3 also works)")
    p.add_argument("--set", action="append", default=[], dest="fixed", metavar="NAME=VALUE",
                   help="a parameter fixed at every point (repeatable)")
    p.add_argument("--grid-file", help="TOML (or .json) with notebook, name, metric, [grid] and "
                                       "[fixed]; the command line wins over it")
    p.add_argument("--metric", help="the metric in the table's plot (default: fact_recall_tuned "
                                    "when recorded, else eval_loss, else final_loss)")
    p.add_argument("--root", default=None, help="folder that holds the sweeps (default outputs/sweeps)")
    p.add_argument("--retry-failed", action="store_true",
                   help="rerun the points that failed earlier with the same parameters")
    p.add_argument("--dry-run", action="store_true", help="list the points and what would run; run nothing")
    p.add_argument("--cell-timeout", type=int, default=None,
                   help="seconds one notebook cell may run (default: no limit)")
    p.add_argument("--verbose", action="store_true", help="echo the notebook's output while it runs")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("papermill").setLevel(logging.WARNING)
    try:
        spec = read_grid_file(args.grid_file) if args.grid_file else {}
        notebook = args.notebook or spec.get("notebook")
        name = args.name or spec.get("name")
        if not notebook or not name:
            raise SweepError("Give the notebook and --name (on the command line or in --grid-file).")
        grid = {**spec.get("grid", {}), **parse_grid(args.grid)}
        fixed = {**spec.get("fixed", {}), **parse_fixed(args.fixed)}
        metric = args.metric or spec.get("metric")
        if args.dry_run:
            sweep = plan(notebook, name, grid, fixed, root=args.root, metric=metric,
                         retry_failed=args.retry_failed)
            print(f"Sweep {sweep.name} of {sweep.notebook} in {_relative(sweep.folder)}: "
                  f"{len(sweep.points)} point(s); fixed {sweep.fixed or 'nothing'}")
            print(sweep.plan_table().to_string(index=False))
            return 0
        sweep = run_sweep(notebook, name, grid, fixed, root=args.root, metric=metric,
                          retry_failed=args.retry_failed, cell_timeout=args.cell_timeout,
                          log_output=args.verbose)
    except (SweepError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print()
    print(sweep.table().to_string(index=False))
    return 0 if all(p["status"] == "finished" for p in sweep.points) else 1


if __name__ == "__main__":
    sys.exit(main())
