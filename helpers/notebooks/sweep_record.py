"""The sweep's record: its folder and ``sweep.json`` (:class:`Sweep`: save, load, the table of
the points and the plot across them)."""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from helpers.core import clock
from helpers.core.figures import _pyplot
from helpers.core.files import write_json
from helpers.core.paths import path as project_path
from helpers.core.paths import work_dir
from helpers.notebooks.sweep_grid import _SAFE, SweepError, _fmt

log = logging.getLogger(__name__)

#: the metric plotted when none is named: the first of these that the points recorded
PREFERRED_METRICS = ("fact_recall_tuned", "eval_loss", "final_loss")


def _read_json(p: Path) -> dict[str, Any] | None:
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


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
            if any(q.get("best_checkpoint") for q in self.points):
                row["best_checkpoint"] = (p.get("best_checkpoint") or {}).get("checkpoint")
            row.update(p.get("metrics") or {})
            rows.append(row)
        df = pd.DataFrame(rows)
        if any(p.get("error") for p in self.points):
            df["error"] = [p.get("error") or "" for p in self.points]
        return df

    def best_checkpoints(self):
        """One row per point: its values, the best checkpoint its run chose (the fine-tuning
        notebook's best-checkpoint section: lowest Burrows' Delta under the copying ceiling), that
        checkpoint's epoch, Delta, held-out bits per byte and copying, the ceiling and the reason.
        A point whose run chose none (or never evaluated its checkpoints) says so."""
        import pandas as pd
        rows = []
        for p in self.points:
            best = p.get("best_checkpoint") or {}
            m = best.get("metrics") or {}
            rows.append({**p["values"], "status": p["status"], "checkpoint": best.get("checkpoint"),
                         "epoch": best.get("epoch"), "delta": m.get("delta"),
                         "bits_per_byte": m.get("bits_per_byte"), "copying": m.get("copying"),
                         "copying_ceiling": best.get("copying_ceiling"),
                         "reason": best.get("reason") or "checkpoints not evaluated in this run"})
        return pd.DataFrame(rows)

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
