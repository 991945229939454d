"""Plots of the summary (one row per variant and metric): bars per metric, the radar, and a
metric's progression across versions."""

from __future__ import annotations

import logging
import math
from typing import Sequence

import numpy as np
import pandas as pd

from helpers.evaluation.plot_common import (
    _SUMMARY_COLUMNS,
    LOWER_IS_BETTER,
    VERSION_ORDER,
    _check_metrics,
    _direction,
    _figure,
    _label_size,
    _require,
    _version_rank,
    _yerr,
    variant_color,
    variants,
)

log = logging.getLogger(__name__)


def grouped_bars(summary: pd.DataFrame, metrics: Sequence[str]):
    """One panel per metric; a bar per variant (grouped by base model, shaded by version), error
    bars from ``low``/``high`` where present. A metric without a value shows "n/a"."""
    _require(summary, _SUMMARY_COLUMNS, "summary")
    metrics = _check_metrics(summary, metrics)
    var = variants(summary)
    n = len(var)
    group = (var["base"] != var["base"].shift()).cumsum() - 1
    x = np.arange(n) + 0.6 * group.to_numpy()
    ncols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / ncols)
    width = max(3.4, 0.38 * n + 1.4)
    fig, axes = _figure(nrows, ncols, figsize=(width * ncols, 3.4 * nrows + 0.1 * n))
    for ax, metric in zip(axes.flat, metrics):
        rows = summary[summary["metric"] == metric].set_index("variant").reindex(var["variant"])
        vals = rows["value"].to_numpy(dtype=float)
        ax.bar(x, np.nan_to_num(vals, nan=0.0), color=list(var["color"]),
               edgecolor=list(var["base_color"]), linewidth=0.8)
        idx, err = _yerr(vals, rows["low"], rows["high"])
        if len(idx):
            ax.errorbar(x[idx], vals[idx], yerr=err, fmt="none", ecolor="black",
                        elinewidth=1, capsize=3)
        for xi in x[~np.isfinite(vals)]:
            ax.text(xi, 0, "n/a", ha="center", va="bottom", fontsize=7, color="0.4")
        ax.set_title(metric + _direction(metric), fontsize=10)
        ax.set_xticks(x, var["variant"], rotation=40 if n <= 6 else 70, ha="right",
                      rotation_mode="anchor", fontsize=_label_size(n))
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    for ax in axes.flat[len(metrics):]:
        fig.delaxes(ax)
    return fig


def radar_values(summary: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """The radar's numbers: variant x metric, each metric min-max normalised across variants to
    0..1 with ``LOWER_IS_BETTER`` metrics flipped, so 1 is the best variant on every axis. A
    metric with no spread (one variant, or all equal) is 0.5; a missing value stays nan."""
    _require(summary, _SUMMARY_COLUMNS, "summary")
    metrics = _check_metrics(summary, metrics)
    var = variants(summary)
    wide = (summary[summary["metric"].isin(metrics)]
            .pivot_table(index="variant", columns="metric", values="value", aggfunc="first",
                         dropna=False)
            .reindex(index=var["variant"], columns=metrics))
    out = pd.DataFrame(index=wide.index, columns=metrics, dtype=float)
    for m in metrics:
        col = wide[m].astype(float)
        lo, hi = col.min(), col.max()
        if not np.isfinite(lo) or hi - lo <= 1e-12 * max(abs(lo), abs(hi), 1):
            norm = col.where(col.isna(), 0.5)
        else:
            norm = (col - lo) / (hi - lo)
        out[m] = 1 - norm if m in LOWER_IS_BETTER else norm
    out.columns.name = "metric"
    return out


def radar(summary: pd.DataFrame, metrics: Sequence[str]):
    """One polygon per variant on a radar of ``metrics`` (see :func:`radar_values`): outward is
    better on every axis; lower-is-better axes are flipped and labelled so (pass metrics with a
    direction: on a ``words`` axis outward only means longer). Missing values leave a gap in the
    outline."""
    values = radar_values(summary, metrics)
    var = variants(summary).set_index("variant")
    metrics = list(values.columns)
    k = len(metrics)
    n = len(values)
    angles = np.linspace(0, 2 * np.pi, k, endpoint=False)
    closed = np.append(angles, angles[:1])
    fig, axes = _figure(figsize=(7.5 + (1.5 if n > 8 else 0), 6),
                        subplot_kw={"projection": "polar"})
    ax = axes[0, 0]
    for variant, row in values.iterrows():
        v = row.to_numpy(dtype=float)
        v = np.append(v, v[:1])
        color = var.loc[variant, "color"]
        ax.plot(closed, v, color=color, linewidth=1.8, marker="o", markersize=3,
                label=variant, gid=f"radar:{variant}")
        ax.fill(closed, np.nan_to_num(v), color=color, alpha=0.08)
    labels = [f"{m}\n(lower is better: flipped)" if m in LOWER_IS_BETTER else m for m in metrics]
    ax.set_xticks(angles, labels, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_yticks([0, 0.5, 1], ["worst", "", "best"], fontsize=7, color="0.5")
    title = "Outward = better (closer to the author); each axis min-max across variants"
    if n < 2:
        title += "\n(one variant: nothing to compare, every axis at 0.5)"
    ax.set_title(title, fontsize=10, pad=18)
    ax.legend(loc="upper left", bbox_to_anchor=(1.08, 1.0), fontsize=_label_size(n),
              ncol=1 if n <= 12 else 2, frameon=False)
    return fig


def progression(summary: pd.DataFrame, metric: str, order: Sequence[str] = VERSION_ORDER):
    """``metric`` across versions for each base model: one line per base model, interval bars
    where present, markers shaded by version. Versions not in ``order`` come after it."""
    _require(summary, _SUMMARY_COLUMNS, "summary")
    _check_metrics(summary, [metric])
    rows = summary[summary["metric"] == metric]
    extra = sorted(set(rows["version"]) - set(order), key=lambda v: (_version_rank(v), str(v)))
    versions = list(order) + extra
    if extra:
        log.info("progression: versions %s are not in order=%s; drawn after it", extra, order)
    xpos = {v: i for i, v in enumerate(versions)}
    var = variants(rows)
    bases = list(dict.fromkeys(var["base"]))
    family = dict(zip(var["base"], var["base_color"]))
    fig, axes = _figure(figsize=(max(5.5, 1.3 * len(versions) + 3), 4))
    ax = axes[0, 0]
    # bases side by side at each version so their interval bars do not hide each other
    shift = np.linspace(-0.06, 0.06, len(bases)) if len(bases) > 1 else np.zeros(1)
    for j, base in enumerate(bases):
        b = rows[rows["base"] == base].copy()
        b["_x"] = b["version"].map(xpos)
        b = b.sort_values("_x")
        x = b["_x"].to_numpy(dtype=float) + shift[j]
        y = b["value"].to_numpy(dtype=float)
        ax.plot(x, y, color=family[base], linewidth=2, label=base, zorder=2,
                gid=f"progression:{base}")
        idx, err = _yerr(y, b["low"], b["high"])
        if len(idx):
            ax.errorbar(x[idx], y[idx], yerr=err, fmt="none", ecolor=family[base],
                        elinewidth=1.2, capsize=4, zorder=2)
        ax.scatter(x, y, s=45, zorder=3, edgecolor=family[base], linewidth=1,
                   color=[variant_color(base, v, family[base]) for v in b["version"]])
    ax.set_xticks(range(len(versions)), versions)
    ax.set_xlim(-0.4, len(versions) - 0.6)
    ax.set_xlabel("version")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} by version{_direction(metric)}")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=_label_size(len(bases)), loc="best", frameon=False)
    return fig
