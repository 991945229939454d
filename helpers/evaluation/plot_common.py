"""What every comparison plot shares: which metrics are better lower, the variants in plotting
order with their colours (one per base model, shaded by version), checks of the input frames,
and the figure itself (see :mod:`helpers.evaluation.plots`)."""

from __future__ import annotations

import math
import re
from typing import Sequence

import numpy as np
import pandas as pd

from helpers import models
from helpers.core.figures import _pyplot

#: Metrics where a lower value is closer to the author (the source of truth for every plot).
LOWER_IS_BETTER = frozenset({"delta", "perplexity", "bits_per_byte", "longest_copy_share",
                             "ngram_overlap", "empty_rate"})

VERSION_ORDER = ("base", "V1", "V2")
# Colour-blind-safe palette (seaborn "colorblind"); the registry's models take fixed slots.
_PALETTE = ("#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#fbafe4",
            "#949494", "#ece133", "#56b4e9")
_SUMMARY_COLUMNS = ("variant", "base", "version", "metric", "value", "low", "high")
_PER_PROMPT_COLUMNS = ("variant", "base", "version", "prompt_index", "words", "empty")


# ---------------------------------------------------------------- colours and order

def _known_bases() -> list[str]:
    return [p.display_name for p in models.REGISTRY.values()]


def base_colors(bases: Sequence[str]) -> dict[str, str]:
    """A colour per base model. The registry's models always keep theirs (the same in every
    plot); other names take the free colours in sorted order, so no two bases of one plot share
    a colour until the palette runs out."""
    known = _known_bases()
    out = {b: _PALETTE[known.index(b) % len(_PALETTE)] for b in bases if b in known}
    free = [c for c in _PALETTE if c not in out.values()] or list(_PALETTE)
    for i, b in enumerate(sorted({b for b in bases if b not in known})):
        out[b] = free[i % len(free)]
    return out


def base_color(base: str) -> str:
    """The colour of one base model (see :func:`base_colors`)."""
    return base_colors([base])[base]


def _version_rank(version: str) -> float:
    if version == "base":
        return 0
    m = re.fullmatch(r"[Vv](\d+)", str(version))
    return int(m.group(1)) if m else math.inf


def variant_color(base: str, version: str, color: str | None = None) -> tuple[float, float, float]:
    """The base model's colour (``color``, default :func:`base_color`) shaded by version: base
    lightest, V1 darker, V2 full, V3+ darker still (RGB in 0..1)."""
    from matplotlib.colors import to_rgb
    rgb = np.array(to_rgb(color or base_color(base)))
    rank = _version_rank(version)
    if rank == 0:
        return tuple(rgb + (1 - rgb) * 0.55)
    if rank == 1:
        return tuple(rgb + (1 - rgb) * 0.25)
    if rank == 2:
        return tuple(rgb)
    if math.isinf(rank):  # a version name we do not know: between V1 and V2
        return tuple(rgb + (1 - rgb) * 0.12)
    return tuple(rgb * (1 - min(0.15 * (rank - 2), 0.45)))


def _split_variant(variant: str) -> tuple[str, str]:
    """(base, version) from a display name like "Qwen3-14B V2"; a name without a version is a
    base model."""
    m = re.fullmatch(r"(.+?)\s+([Vv]\d+)", variant.strip())
    return (m.group(1), m.group(2).upper()) if m else (variant, "base")


def _require(frame: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame (helpers.compare builds it), "
                        f"got {type(frame).__name__}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} is missing the columns {missing}; it needs {list(columns)} "
                         f"(has {list(frame.columns)}). Build it with helpers.compare.")


def variants(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per variant (``variant, base, version, base_color, color``) in plotting order:
    base models by name, then versions (base, V1, V2, ...)."""
    _require(frame, ("variant", "base", "version"), "the frame")
    v = frame[["variant", "base", "version"]].drop_duplicates()
    clash = v["variant"][v["variant"].duplicated()]
    if len(clash):
        raise ValueError(f"variant {clash.iloc[0]!r} has more than one base/version in the frame; "
                         "each variant name must belong to one base model and one version")
    v = v.assign(_rank=v["version"].map(_version_rank))
    v = v.sort_values(["base", "_rank", "variant"]).drop(columns="_rank").reset_index(drop=True)
    family = base_colors(list(v["base"]))
    v["base_color"] = v["base"].map(family)
    v["color"] = [variant_color(b, ver, family[b]) for b, ver in zip(v["base"], v["version"])]
    return v


def _direction(metric: str) -> str:
    return " (lower is better)" if metric in LOWER_IS_BETTER else ""


def _check_metrics(summary: pd.DataFrame, metrics: Sequence[str]) -> list[str]:
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    if not metrics:
        raise ValueError("metrics is empty: name at least one of the summary's metrics")
    known = list(dict.fromkeys(summary["metric"]))
    unknown = [m for m in metrics if m not in known]
    if unknown:
        raise ValueError(f"metrics {unknown} are not in the summary; it has {known}")
    rows = summary[summary["metric"].isin(metrics)]
    dup = rows.duplicated(["variant", "metric"])
    if dup.any():
        first = rows[dup].iloc[0]
        raise ValueError(f"the summary has more than one {first['metric']!r} row for "
                         f"{first['variant']!r}: it needs one row per variant and metric")
    return metrics


def _figure(nrows: int = 1, ncols: int = 1, figsize=(7, 4), **kw):
    plt = _pyplot()
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False,
                             layout="constrained", **kw)
    plt.close(fig)  # shown once, as the cell's result
    return fig, axes


def _note(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def _yerr(values, low, high) -> tuple[np.ndarray, np.ndarray]:
    """Indices with a finite interval, and the asymmetric error bar sizes there."""
    values, low, high = (np.asarray(a, dtype=float) for a in (values, low, high))
    ok = np.isfinite(values) & np.isfinite(low) & np.isfinite(high)
    err = np.vstack([np.clip(values - low, 0, None), np.clip(high - values, 0, None)])
    return np.flatnonzero(ok), err[:, ok]


def _label_size(n: int) -> float:
    return 9 if n <= 6 else 8 if n <= 10 else 7

