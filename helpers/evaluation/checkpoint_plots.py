"""The checkpoint plot: held-out bits per byte, Burrows' Delta, copying and (when measured)
recitation per epoch, one panel each, the best checkpoint marked in every panel and the copying ceiling drawn (the comparison
plots' figure and palette, :mod:`helpers.evaluation.plot_common`)."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from helpers.evaluation.plot_common import _PALETTE, _direction, _figure, _note

#: the panels: metric, axis label
PANELS = (("bits_per_byte", "held-out bits per byte"), ("delta", "Burrows' Delta to the author"),
          ("copying", "copying (share of 8-word runs)"),
          ("recitation_share", "recitation (share of passages recited)"))
_BEST = "#d55e00"


def _x(row: Mapping[str, Any]) -> float:
    e = row.get("epoch")
    return float(e) if isinstance(e, (int, float)) and math.isfinite(e) else float(row.get("step", 0))


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else math.nan


def checkpoint_plot(rows: Sequence[Mapping[str, Any]], best: Mapping[str, Any] | None,
                    copying_ceiling: float, *, title: str = "Checkpoints on the held-out chapters"):
    """One panel per metric of :data:`PANELS` (recitation only when a row has it), x the epoch
    (the step when a checkpoint has no epoch). Checkpoints over ``copying_ceiling`` are drawn hollow; the best one is a star with a
    dotted line through every panel; the ceiling is a dashed line in the copying panel."""
    panels = [p for p in PANELS if p[0] != "recitation_share" or any(p[0] in r for r in rows)]
    fig, axes = _figure(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    by_epoch = all(isinstance(r.get("epoch"), (int, float)) for r in rows)
    xs = [_x(r) for r in rows]
    over = [not (_num(r.get("copying")) <= copying_ceiling) for r in rows]
    for ax, (metric, label) in zip(axes[0], panels):
        ys = [_num(r.get(metric)) for r in rows]
        if not rows or all(math.isnan(y) for y in ys):
            _note(ax, f"no {label}")
            continue
        ax.plot(xs, ys, color=_PALETTE[0], linewidth=1.6, zorder=2)
        for x, y, o in zip(xs, ys, over):
            ax.scatter([x], [y], s=36, zorder=3, color="white" if o else _PALETTE[0],
                       edgecolors=_PALETTE[0], linewidths=1.4)
        if metric == "copying":
            ax.axhline(copying_ceiling, color="0.3", linestyle="--", linewidth=1,
                       label=f"ceiling {copying_ceiling:g}")
        if best is not None:
            bx = _x(best)
            ax.axvline(bx, color=_BEST, linestyle=":", linewidth=1.2, zorder=1)
            by = _num(best.get(metric))
            if not math.isnan(by):
                ax.scatter([bx], [by], marker="*", s=180, color=_BEST, zorder=4, label="best")
        if metric in ("copying", "recitation_share"):  # shares: from 0, the ceiling in view
            top = max([y for y in ys if not math.isnan(y)]
                      + ([copying_ceiling] if metric == "copying" else []))
            ax.set_ylim(-0.02, max(top * 1.15, 0.05))
        if metric == "copying" or (metric == "bits_per_byte" and best is not None):
            ax.legend(fontsize=8, frameon=False, loc="best")
        ax.set_title(label + _direction(metric), fontsize=10)
        ax.set_xlabel("epoch" if by_epoch else "step")
        ax.set_xticks(sorted(set(xs)))
        ax.grid(alpha=0.3)
    suffix = (f"best: {best['checkpoint']} (star)" if best is not None
              else "no checkpoint under the copying ceiling")
    fig.suptitle(f"{title}; {suffix}; hollow: over the ceiling", fontsize=10)
    return fig
