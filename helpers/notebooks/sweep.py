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
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import itertools
import json
import logging
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from helpers.notebooks.setup import ROOT, work_dir
from helpers.notebooks.setup import path as project_path
from helpers.core import clock
from helpers.core.files import write_json

log = logging.getLogger(__name__)

#: the metric plotted when none is named: the first of these that the points recorded
PREFERRED_METRICS = ("fact_recall_tuned", "eval_loss", "final_loss")
#: parameters the sweep sets itself
RESERVED = ("output_dir",)
EXECUTED = "executed.ipynb"
_SAFE = re.compile(r"[^A-Za-z0-9._=+-]")


class SweepError(ValueError):
    """A sweep that cannot start: unknown parameter, bad value, bad grid or name."""


# -- the notebook's parameters ----------------------------------------------------------------
def notebook_parameters(notebook: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The notebook's ``parameters`` cell as papermill reads it: name -> {inferred_type_name,
    default, help}."""
    import papermill
    return papermill.inspect_notebook(str(notebook))


def resolve_notebook(notebook: str | os.PathLike) -> Path:
    p = Path(notebook).expanduser()
    if not p.exists():
        p = project_path(notebook)
    if p.suffix == ".py":
        raise SweepError(f"{notebook} is a notebook source; pass the notebook made from it, "
                         f"{p.with_suffix('.ipynb').name} (`make notebooks` writes it).")
    if not p.is_file():
        raise SweepError(f"Notebook not found: {notebook} (paths are relative to the current "
                         f"folder or the project root {ROOT}).")
    return p


def _types(info: Mapping[str, Any]) -> list[str]:
    """The Python types a parameter takes, from its annotation, else from its default."""
    found = re.findall(r"\b(bool|int|float|str|list|dict|tuple)\b", str(info.get("inferred_type_name") or ""))
    if not found:
        try:
            default = ast.literal_eval(str(info.get("default")))
        except (ValueError, SyntaxError):
            default = None
        if default is not None:
            found = [type(default).__name__]
    return found


def coerce(name: str, value: Any, info: Mapping[str, Any]) -> Any:
    """``value`` (text from the command line, or a value from a grid file or a dict) as the
    parameter's own type; "None" is None. Raises :class:`SweepError` naming the parameter."""
    types = _types(info)
    if isinstance(value, str):
        text = value.strip()
        if text in ("None", "none", "null"):
            return None
        if "str" in types:
            if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
                return text[1:-1]
            return value
        if not types:  # no annotation, default None: read it as a Python literal, else text
            if text.lower() in ("true", "false"):
                return text.lower() == "true"
            try:
                return ast.literal_eval(text)
            except (ValueError, SyntaxError):
                return value
        for t in types:
            try:
                return _from_text(t, text)
            except ValueError:
                continue
        raise SweepError(f"{name}={value!r}: {name} is {' or '.join(types)} in the notebook "
                         f"(default {info.get('default')}); {_example(name, types)}.")
    if value is None or not types:
        return value
    for t in types:  # a typed value (grid file, dict): check it, widen int to float
        if t == "bool" and isinstance(value, bool):
            return value
        if t == "int" and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t == "int" and isinstance(value, float) and value.is_integer():
            return int(value)
        if t == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if t == "str" and isinstance(value, str):
            return value
        if t in ("list", "tuple") and isinstance(value, (list, tuple)):
            return list(value)
        if t == "dict" and isinstance(value, dict):
            return value
    raise SweepError(f"{name}={value!r}: {name} is {' or '.join(types)} in the notebook "
                     f"(default {info.get('default')}); {_example(name, types)}.")


def _from_text(t: str, text: str) -> Any:
    if t == "bool":
        low = text.lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ValueError(text)
    if t == "int":
        return int(text)
    if t == "float":
        return float(text)
    value = ast.literal_eval(text)  # list, dict, tuple
    if type(value).__name__ != t:
        raise ValueError(text)
    return value


def _example(name: str, types: Sequence[str]) -> str:
    examples = {"bool": "True or False", "int": "a whole number", "float": "a number (1e-3 works)",
                "list": "a Python list like [1, 2]", "dict": "a Python dict", "tuple": "a Python tuple"}
    return "give " + " or ".join(examples.get(t, t) for t in types) + " (or None for the default)"


def _check_names(names: Iterable[str], params: Mapping[str, Any], notebook: Path) -> None:
    names = list(names)
    reserved = [n for n in names if n in RESERVED]
    if reserved:
        raise SweepError(f"{', '.join(reserved)} cannot be set in a sweep: each point's folder is "
                         "its output_dir. Choose the sweep's folder with --name (and --root).")
    unknown = [n for n in names if n not in params]
    if unknown:
        raise SweepError(f"Unknown parameter(s) {', '.join(unknown)} for {notebook.name}. Its "
                         f"parameters: {', '.join(params)} (papermill --help-notebook {_relative(notebook)} "
                         "describes them).")


# -- grids ------------------------------------------------------------------------------------
def _split(spec: str | Sequence[str] | None) -> list[str]:
    if spec is None:
        return []
    items = [spec] if isinstance(spec, str) else list(spec)
    return [s.strip() for item in items for s in str(item).split(";") if s.strip()]


def parse_assignment(text: str, *, what: str = "--grid") -> tuple[str, str]:
    """``NAME=VALUE``, or ``NAME: VALUE`` (a notebook's parameter line cannot hold a second ``=``:
    papermill skips it), split at the first of the two."""
    cut = min((i for i in (text.find("="), text.find(":")) if i >= 0), default=-1)
    name, eq, value = (text[:cut], text[cut], text[cut + 1:]) if cut >= 0 else (text, "", "")
    if not eq or not name.strip():
        example = "lora_r=8,16" if what == "--grid" else "epochs=2"
        raise SweepError(f"{what} {text!r} needs the form NAME={'V1,V2' if what == '--grid' else 'VALUE'} "
                         f"(for example {what} {example}).")
    return name.strip(), value.strip()


def parse_grid(spec: str | Sequence[str] | Mapping[str, Any] | None) -> dict[str, list[Any]]:
    """Axes from ``"lora_r=8,16;learning_rate=1e-3,5e-3"`` (or ``"lora_r: 8, 16; ..."``), a list
    of ``NAME=V1,V2`` strings, or a dict of name -> values (a scalar is one value). Values stay
    text until :func:`coerce`."""
    if isinstance(spec, Mapping):
        grid = {str(k): (list(v) if isinstance(v, (list, tuple)) else [v]) for k, v in spec.items()}
    else:
        grid = {}
        for item in _split(spec):
            name, values = parse_assignment(item, what="--grid")
            if name in grid:
                raise SweepError(f"--grid {name} is given twice; put all its values in one: "
                                 f"--grid {name}=V1,V2,...")
            grid[name] = [v.strip() for v in values.split(",") if v.strip()]
    for name, values in grid.items():
        if not values:
            raise SweepError(f"--grid {name} has no values; give them comma-separated, "
                             f"e.g. --grid {name}=V1,V2.")
    return grid


def parse_fixed(spec: str | Sequence[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """Fixed parameters from ``"epochs=2;smoke=True"``, a list of ``NAME=VALUE``, or a dict."""
    if isinstance(spec, Mapping):
        return dict(spec)
    return dict(parse_assignment(item, what="--set") for item in _split(spec))


def read_grid_file(path: str | os.PathLike) -> dict[str, Any]:
    """A sweep described in a TOML (or JSON) file: optional ``notebook``, ``name``, ``metric``,
    a ``[grid]`` table of name -> list of values and a ``[fixed]`` table of name -> value."""
    p = Path(path).expanduser()
    if not p.exists():
        p = project_path(path)
    if not p.is_file():
        raise SweepError(f"Grid file not found: {path}")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix == ".json":
            spec = json.loads(text)
        else:
            import tomllib
            spec = tomllib.loads(text)
    except ValueError as e:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise SweepError(f"{p}: {e}") from e
    known = ("notebook", "name", "metric", "grid", "fixed")
    unknown = sorted(set(spec) - set(known))
    if unknown:
        raise SweepError(f"{p}: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}.")
    for table in ("grid", "fixed"):
        if table in spec and not isinstance(spec[table], dict):
            raise SweepError(f"{p}: [{table}] must be a table of parameter = value(s).")
    return spec


def point_id(values: Mapping[str, Any]) -> str:
    """A stable, filesystem-safe folder name from a point's values: ``lora_r=8__learning_rate=0.001``."""
    text = "__".join(f"{k}={_fmt(v)}" for k, v in values.items())
    safe = _SAFE.sub("_", text)
    if len(safe) > 120:
        safe = safe[:100] + "__" + hashlib.sha256(text.encode()).hexdigest()[:10]
    return safe


def _fmt(v: Any) -> str:
    return repr(v) if isinstance(v, float) else str(v)


def points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination, the first axis varying slowest."""
    names = list(grid)
    return [dict(zip(names, combo)) for combo in itertools.product(*(grid[n] for n in names))]


# -- one point's record -----------------------------------------------------------------------
def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or (isinstance(a, bool) and isinstance(b, bool) and a == b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    return a == b


def _read_json(p: Path) -> dict[str, Any] | None:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


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


def _now() -> str:
    return clock.now()


# -- the sweep ------------------------------------------------------------------------------
@dataclass
class Sweep:
    """A sweep's folder and its ``sweep.json``: the notebook, the grid, the fixed parameters and
    one record per point (id, values, status, action, seconds, error, metrics, final_loss)."""

    folder: Path
    notebook: str
    grid: dict[str, list[Any]]
    fixed: dict[str, Any]
    points: list[dict[str, Any]] = field(default_factory=list)
    metric: str | None = None
    created: str = field(default_factory=_now)

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def path(self) -> Path:
        return self.folder / "sweep.json"

    def statuses(self) -> dict[str, str]:
        return {p["id"]: p["status"] for p in self.points}

    def actions(self) -> dict[str, str | None]:
        """What this invocation did with each point: ran, skipped (finished earlier), kept
        (failed earlier) or, in a plan, run / skip / keep."""
        return {p["id"]: p.get("action") for p in self.points}

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "notebook": self.notebook, "grid": self.grid, "fixed": self.fixed,
                "metric": self.metric, "created": self.created, "updated": _now(),
                "points": self.points}

    def save(self) -> Path:
        """Rewrite sweep.json atomically."""
        return write_json(self.path, self.to_dict())

    # -- results ----------------------------------------------------------------------------
    def table(self):
        """One row per point: the grid values, status, seconds, final loss and every numeric
        metric from the point's run.json."""
        import pandas as pd
        rows = []
        for p in self.points:
            row = dict(p["values"])
            row.update(status=p["status"], seconds=p.get("seconds"), final_loss=p.get("final_loss"))
            row.update(p.get("metrics") or {})
            rows.append(row)
        df = pd.DataFrame(rows)
        if any(p.get("error") for p in self.points):
            df["error"] = [p.get("error") or "" for p in self.points]
        return df

    def plan_table(self):
        """One row per point: its values, its status now, and what a run would do and why."""
        import pandas as pd
        return pd.DataFrame([{**p["values"], "status": p["status"], "action": p.get("action"),
                              "why": p.get("reason", "")} for p in self.points])

    def metrics(self) -> list[str]:
        """Numeric columns of the table that can be plotted."""
        names = ["final_loss", "seconds"]
        for p in self.points:
            names += [k for k in p.get("metrics") or {} if k not in names]
        return names

    def default_metric(self) -> str:
        """The sweep's metric when the points recorded it, else the first of PREFERRED_METRICS."""
        if self.metric and self.metric in self.metrics():
            return self.metric
        recorded = {k for p in self.points for k in (p.get("metrics") or {})}
        recorded |= {"final_loss"} if any(p.get("final_loss") is not None for p in self.points) else set()
        for m in PREFERRED_METRICS:
            if m in recorded:
                return m
        return sorted(recorded)[0] if recorded else "seconds"

    def plot(self, metric: str | None = None, path: str | os.PathLike | None = None):
        """``metric`` across the points: a bar per point when one axis varies, else a line per
        value of the other axes against the first. Saved to ``path`` when given."""
        from helpers.core.figures import _pyplot
        metric = metric or self.default_metric()
        known = self.metrics()
        if metric not in known:
            raise SweepError(f"metric {metric!r} is not recorded by the points of sweep {self.name}; "
                             f"recorded: {', '.join(known)} (pass one with --metric).")
        df = self.table()
        y = [float(v) if v is not None and not _isnan(v) else math.nan
             for v in (df[metric] if metric in df else [None] * len(df))]
        varying = [a for a in self.grid if len(self.grid[a]) > 1] or list(self.grid)[:1]
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(7.5, 3.6))
        x_axis = varying[0]
        x_values = self.grid[x_axis]
        failed = sum(p["status"] != "finished" for p in self.points)
        if len(varying) == 1:
            labels = [_label(p["values"], varying) if len(self.grid) > 1 else _fmt(p["values"][x_axis])
                      for p in self.points]
            bars = ax.bar(range(len(y)), [0 if math.isnan(v) else v for v in y], color="#4C72B0")
            ax.bar_label(bars, labels=["not finished" if math.isnan(v) else f"{v:.3g}" for v in y],
                         padding=2, fontsize=9)
            ax.set_xticks(range(len(y)), labels)
        else:
            others = varying[1:]
            series: dict[str, list[float]] = {}
            for p, v in zip(self.points, y):
                key = (_fmt(p["values"][others[0]]) if len(others) == 1
                       else _label(p["values"], others))
                series.setdefault(key, [math.nan] * len(x_values))
                series[key][x_values.index(p["values"][x_axis])] = v
            for key, ys in series.items():
                line, = ax.plot(range(len(x_values)), ys, marker="o", linewidth=1.8, label=key)
                if len(self.points) <= 16:
                    for xi, v in enumerate(ys):
                        if not math.isnan(v):
                            ax.annotate(f"{v:.3g}", (xi, v), textcoords="offset points",
                                        xytext=(6, 4), fontsize=8, color=line.get_color())
            ax.set_xticks(range(len(x_values)), [_fmt(v) for v in x_values])
            ax.set_xlim(-0.3, len(x_values) - 0.7)
            ax.legend(title=", ".join(others), fontsize=9, title_fontsize=9, frameon=False,
                      loc="center left", bbox_to_anchor=(1.01, 0.5))
        ax.set_xlabel(x_axis if len(varying) > 1 or len(self.grid) == 1 else "point")
        ax.set_ylabel(metric)
        finite = [v for v in y if not math.isnan(v)]
        if finite and min(finite) >= 0 and max(finite) <= 1:
            ax.set_ylim(0, 1.1)
        title = f"Sweep {self.name}: {metric}"
        if failed:
            title += f" ({failed} of {len(self.points)} points not finished)"
        ax.set_title(title)
        ax.grid(alpha=0.3, axis="y")
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=110)
        plt.close(fig)  # shown once, as the cell's result
        return fig

    def save_results(self, metric: str | None = None) -> list[Path]:
        """Write results.csv and results.png (when a point finished) beside sweep.json."""
        out = [self.folder / "results.csv"]
        self.table().to_csv(out[0], index=False)
        if any(p["status"] == "finished" for p in self.points):
            chosen = metric or self.metric
            if chosen and chosen not in self.metrics():
                log.warning("The points recorded no %s (they recorded %s); results.png shows %s.",
                            chosen, ", ".join(self.metrics()), self.default_metric())
                chosen = None
            out.append(self.folder / "results.png")
            self.plot(chosen, path=out[1])
        else:
            log.warning("No point of sweep %s finished: no results.png.", self.name)
        return out


def _isnan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _label(values: Mapping[str, Any], names: Sequence[str]) -> str:
    return ", ".join(f"{n}={_fmt(values[n])}" for n in names)


def default_root() -> Path:
    """``outputs/sweeps`` in the work folder (the project root unless FINETUNING_WORKDIR is set)."""
    return work_dir() / "outputs" / "sweeps"


def sweep_folder(name: str, root: str | os.PathLike | None = None) -> Path:
    if not name or _SAFE.search(name) or name in (".", ".."):
        raise SweepError(f"Sweep name {name!r} must be a folder name: letters, digits and . _ - = + "
                         "(for example --name mariya-r-lr).")
    return (project_path(root) if root else default_root()) / name


def load(name_or_folder: str | os.PathLike, root: str | os.PathLike | None = None) -> Sweep:
    """A sweep from its folder, or from its name under ``root`` (default outputs/sweeps)."""
    p = Path(name_or_folder).expanduser()
    folder = p if (p / "sweep.json").is_file() or len(p.parts) > 1 else sweep_folder(str(p), root)
    d = _read_json(folder / "sweep.json")
    if d is None:
        raise FileNotFoundError(f"No sweep at {folder} (no readable sweep.json); run "
                                f"`python -m helpers.sweep NOTEBOOK --name {folder.name} --grid ...` first.")
    return Sweep(folder=folder, notebook=d["notebook"], grid=d["grid"], fixed=d["fixed"],
                 points=d["points"], metric=d.get("metric"), created=d.get("created", _now()))


def _relative(p: Path) -> str:
    try:
        return str(p.resolve().relative_to(ROOT))
    except ValueError:
        return str(p.resolve())


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
    from helpers import notebooks
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
    p.add_argument("--root", default=None, help=f"folder that holds the sweeps (default outputs/sweeps)")
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
