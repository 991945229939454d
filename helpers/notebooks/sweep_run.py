"""Running a sweep: the notebook executed at every point that the plan runs, sweep.json saved
around each point, a point whose training had finished moved aside before it runs again."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from helpers import notebooks
from helpers.core import clock
from helpers.notebooks.sweep_grid import _fmt, _relative, resolve_notebook
from helpers.notebooks.sweep_plan import EXECUTED, _read_results, plan
from helpers.notebooks.sweep_record import Sweep, _now, _read_json

log = logging.getLogger(__name__)


def _headline(sweep: Sweep, point: dict[str, Any], metric: str | None) -> str:
    m = metric if metric in sweep.metrics() else sweep.default_metric()
    value = point.get("final_loss") if m == "final_loss" else (point.get("metrics") or {}).get(m)
    return f"{m} {value:.3g}" if isinstance(value, (int, float)) else ""


def run_sweep(notebook: str | os.PathLike, name: str, grid, fixed=None, *,
              root: str | os.PathLike | None = None, metric: str | None = None,
              progress: bool = True, retry_failed: bool = False, smoke: bool | None = None,
              cell_timeout: int | None = None, log_output: bool = False) -> Sweep:
    """Execute ``notebook`` at every point of ``grid`` (``"a=1,2;b=x,y"``, ``["a=1,2"]`` or
    ``{"a": [1, 2]}``) with the ``fixed`` parameters, into ``<root>/<name>/``; points finished
    earlier are skipped (see the module docstring). A point that fails is recorded and the sweep
    goes on. Writes sweep.json after every point, then results.csv and results.png."""
    sweep = plan(notebook, name, grid, fixed, root=root, metric=metric, smoke=smoke,
                 retry_failed=retry_failed)
    say = log.info if progress else log.debug
    nb = resolve_notebook(notebook)
    n = len(sweep.points)
    planned = [(p.pop("action"), p.pop("reason", "")) for p in sweep.points]
    for p in sweep.points:
        p["action"] = None  # set as each point is reached: ran, skipped or kept
    sweep.save()
    for i, (point, (action, reason)) in enumerate(zip(sweep.points, planned), 1):
        label = f"[{i}/{n}] " + " ".join(f"{k}={_fmt(v)}" for k, v in point["values"].items())
        if action == "skip":
            point["action"] = "skipped"
            head = _headline(sweep, point, metric)
            say("%s: finished earlier, skipped%s", label, f" ({head})" if head else "")
            continue
        if action == "keep":
            point["action"] = "kept"
            say("%s: failed earlier (%s), kept; --retry-failed reruns it", label, point["error"])
            continue
        folder = sweep.folder / point["id"]
        say("%s ...%s", label, "" if reason == "new" else f" (again: {reason})")
        _set_aside_if_trained(folder)
        point.update(status="running", action="ran", started=_now(), error=None)
        sweep.save()
        t0 = time.time()
        try:
            notebooks.execute(nb, folder / EXECUTED, {**sweep.fixed, **point["values"],
                                                       "output_dir": str(folder)},
                              timeout=cell_timeout, progress=False, log_output=log_output)
        except KeyboardInterrupt:
            point.update(status="interrupted", seconds=round(time.time() - t0, 1), finished=_now())
            sweep.save()
            raise
        except Exception as e:  # noqa: BLE001  (recorded; the sweep goes on)
            point.update(status="failed", error=_error_line(e))
        else:
            run = _read_json(folder / "run.json")
            if run is None or run.get("status") != "finished":
                point.update(status="failed", error=(
                    f"the notebook ran but its run.json in {folder} is missing or not finished"
                    if run is None else f"run.json status {run.get('status')!r}"))
            else:
                point["status"] = "finished"
        point.update(seconds=round(time.time() - t0, 1), finished=_now())
        _read_results(point, folder)
        sweep.save()
        if point["status"] == "finished":
            head = _headline(sweep, point, metric)
            say("%s ... finished in %.0f s%s", label, point["seconds"], f", {head}" if head else "")
        else:
            log.warning("%s ... failed after %.0f s: %s (see %s)", label, point["seconds"],
                        point["error"], _relative(folder / EXECUTED))
    sweep.save()
    written = sweep.save_results(metric)
    say("Sweep %s: %d finished, %d failed of %d; %s", sweep.name,
        sum(p["status"] == "finished" for p in sweep.points),
        sum(p["status"] == "failed" for p in sweep.points), n,
        ", ".join(_relative(w) for w in written))
    return sweep


def _set_aside_if_trained(folder: Path) -> None:
    """A point that runs again after its training had finished (killed or failed later, or its
    record edited) starts from a fresh folder: resuming from the final checkpoint would train
    nothing and record no loss. Its old folder is moved aside, never deleted. A point stopped
    during training keeps its folder, so training resumes from its last checkpoint."""
    run = _read_json(folder / "run.json")
    if run and (run.get("train") or {}).get("steps"):
        aside = folder.with_name(f"{folder.name}.old-{clock.stamp()}")
        folder.rename(aside)
        log.info("%s had finished training; moved it to %s and starting over.", folder.name, aside.name)


def _error_line(e: BaseException) -> str:
    ename = getattr(e, "ename", None)
    if ename:  # PapermillExecutionError: the notebook's own exception
        evalue = (getattr(e, "evalue", "") or "").strip().splitlines()
        text = f"{ename}: {evalue[0] if evalue else ''}"
        if getattr(e, "exec_count", None) is not None:
            text += f" (cell {e.exec_count})"
    else:
        first = str(e).strip().splitlines()
        text = f"{type(e).__name__}: {first[0] if first else ''}"
    return text[:400]
