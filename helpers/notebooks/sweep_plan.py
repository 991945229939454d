"""The sweep's plan: each point's status now and what a run does with it (run, skip or keep) and
why, from the point's ``run.json`` and ``executed.ipynb`` (:func:`finished`, :func:`plan`)."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

from helpers.notebooks.sweep_grid import (
    RESERVED,
    SweepError,
    _check_names,
    _fmt,
    _relative,
    coerce,
    notebook_parameters,
    parse_fixed,
    parse_grid,
    point_id,
    points,
    resolve_notebook,
)
from helpers.notebooks.sweep_record import Sweep, _now, _read_json, sweep_folder

EXECUTED = "executed.ipynb"


# -- one point's record -----------------------------------------------------------------------
def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or (isinstance(a, bool) and isinstance(b, bool) and a == b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    return a == b


def executed_parameters(folder: Path) -> dict[str, Any] | None:
    """The parameters papermill injected into the point's executed notebook (None if absent)."""
    nb = _read_json(folder / EXECUTED)
    if nb is None:
        return None
    return nb.get("metadata", {}).get("papermill", {}).get("parameters")


def _mismatch(folder: Path, params: Mapping[str, Any], recorded: Mapping[str, Any] | None) -> str | None:
    """Why the point's recorded parameters are not ``params`` (None when they match)."""
    wanted = {k: v for k, v in params.items() if k not in RESERVED}
    executed = executed_parameters(folder)
    if executed is None:
        return f"no {EXECUTED}"
    executed = {k: v for k, v in executed.items() if k not in RESERVED}
    for k in sorted(set(wanted) | set(executed)):
        if k not in executed or k not in wanted or not _same(executed[k], wanted[k]):
            return (f"{EXECUTED} ran with {k}={executed.get(k, '(not set)')!r}, "
                    f"the point has {wanted.get(k, '(not set)')!r}")
    for k, v in wanted.items():  # what the notebook itself recorded (None = its default)
        if v is not None and recorded and k in recorded and not _same(recorded[k], v):
            return f"run.json records {k}={recorded[k]!r}, the point has {v!r}"
    return None


def finished(folder: Path, params: Mapping[str, Any]) -> tuple[bool, str]:
    """(True, "") when the point's run.json says finished with these parameters; else (False, why)."""
    run = _read_json(folder / "run.json")
    if run is None:
        return False, "no run.json"
    if run.get("status") != "finished":
        return False, f"run.json status is {run.get('status')!r}"
    why = _mismatch(folder, params, run.get("parameters"))
    return (False, why) if why else (True, "")


def _numeric(d: Mapping[str, Any] | None) -> dict[str, float]:
    return {k: v for k, v in (d or {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def plan(notebook: str | os.PathLike, name: str, grid, fixed=None, *,
         root: str | os.PathLike | None = None, metric: str | None = None,
         smoke: bool | None = None, retry_failed: bool = False) -> Sweep:
    """The sweep without running it: each point's status now and its ``action`` (run, skip or
    keep) with the reason. Raises :class:`SweepError` for an unknown parameter or a bad value."""
    nb = resolve_notebook(notebook)
    params = notebook_parameters(nb)
    grid = parse_grid(grid)
    fixed = parse_fixed(fixed)
    if smoke is not None:
        fixed.setdefault("smoke", smoke)
    if not grid:
        raise SweepError("The grid is empty: give at least one axis, e.g. --grid lora_r=8,16.")
    both = sorted(set(grid) & set(fixed))
    if both:
        raise SweepError(f"{', '.join(both)} is both a grid axis and a fixed parameter; keep one.")
    _check_names(list(grid) + list(fixed), params, nb)
    if "output_dir" not in params:
        raise SweepError(f"{nb.name} has no output_dir parameter: a sweep gives each point its own "
                         "folder through it (and reads the run.json the notebook writes there).")
    grid = {k: [coerce(k, v, params[k]) for v in vs] for k, vs in grid.items()}
    fixed = {k: coerce(k, v, params[k]) for k, v in fixed.items()}
    for k, vs in grid.items():
        if len({json.dumps(v, sort_keys=True, default=str) for v in vs}) < len(vs):
            raise SweepError(f"--grid {k} repeats a value: {', '.join(_fmt(v) for v in vs)}.")
    folder = sweep_folder(name, root)
    previous = {}
    old = _read_json(folder / "sweep.json")
    if old:
        previous = {p["id"]: p for p in old.get("points", [])}
    sweep = Sweep(folder=folder, notebook=_relative(nb), grid=grid, fixed=fixed, metric=metric,
                  created=(old or {}).get("created", _now()))
    ids = [point_id(v) for v in points(grid)]
    dupes = {i for i in ids if ids.count(i) > 1}
    for values, pid in zip(points(grid), ids):
        if pid in dupes:
            pid += "__" + hashlib.sha256(json.dumps(values, default=str).encode()).hexdigest()[:8]
        pfolder = folder / pid
        run_params = {**fixed, **values, "output_dir": str(pfolder)}
        prev = previous.get(pid, {})
        point = {"id": pid, "values": values, "status": "pending", "seconds": prev.get("seconds"),
                 "error": None, "metrics": {}, "final_loss": None}
        done, why = finished(pfolder, run_params)
        if done:
            _read_results(point, pfolder)
            point.update(status="finished", action="skip", reason="finished earlier",
                         **{k: prev[k] for k in ("started", "finished") if k in prev})
            if point["seconds"] is None:
                point["seconds"] = (_read_json(pfolder / "run.json") or {}).get("wall_seconds")
        elif prev.get("status") == "failed" and _mismatch(pfolder, run_params, None) is None \
                and not retry_failed:
            point.update(status="failed", error=prev.get("error"), action="keep",
                         reason="failed earlier with these parameters (--retry-failed reruns it)")
        else:
            point.update(action="run", reason=why if pfolder.exists() else "new")
            point["seconds"] = None
        sweep.points.append(point)
    return sweep


def _read_results(point: dict[str, Any], folder: Path) -> None:
    run = _read_json(folder / "run.json") or {}
    point["metrics"] = _numeric(run.get("metrics"))
    point["final_loss"] = (run.get("train") or {}).get("final_loss")
    if run.get("best_checkpoint"):  # the fine-tuning notebook's best-checkpoint section ran
        point["best_checkpoint"] = run["best_checkpoint"]

