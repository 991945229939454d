"""Plots and the paired delta table of the model comparison (base vs tuned, every model).

Inputs are the frames ``helpers.compare`` builds (one row per variant and prompt, or per variant
and metric; see each function). Every plot returns a matplotlib Figure (closed from pyplot, so a
notebook shows it once, as the cell's result) and never calls ``plt.show()``.

Colours: one per base model (``base_color``: the registry's models keep theirs in every plot),
shaded by version: the base model lightest, V1 darker, V2 full colour (``variant_color``).

Direction: "better" means closer to the author. ``LOWER_IS_BETTER`` lists the metrics where a
smaller number is closer (Burrows' Delta is a distance; perplexity and bits per byte on held-out
text). The copy metrics (``longest_copy_share``, ``ngram_overlap``) are lower-better too: copying
the author's sentences is not writing like the author. ``empty_rate`` is the share of empty
answers. Every other metric counts as higher-is-better in :func:`radar`; metrics with no
direction (``words``, ``mean_sentence_words``: closer to the author's own value is better) are
read from the bars, and on a radar their "outward" only means "more".
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

#: Metrics where a lower value is closer to the author (the source of truth for every plot).
LOWER_IS_BETTER = frozenset({"delta", "perplexity", "bits_per_byte", "longest_copy_share",
                             "ngram_overlap", "empty_rate"})

VERSION_ORDER = ("base", "V1", "V2")
# Colour-blind-safe palette (seaborn "colorblind"); the registry's models take fixed slots.
_PALETTE = ("#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#fbafe4",
            "#949494", "#ece133", "#56b4e9")
_EMPTY_COLOR = "#d62728"
_SUMMARY_COLUMNS = ("variant", "base", "version", "metric", "value", "low", "high")
_PER_PROMPT_COLUMNS = ("variant", "base", "version", "prompt_index", "words", "empty")


# ---------------------------------------------------------------- colours and order

def _known_bases() -> list[str]:
    from helpers.models import REGISTRY
    return [p.display_name for p in REGISTRY.values()]


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
    from helpers.core.figures import _pyplot
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


# ---------------------------------------------------------------- plots

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


def prompt_lengths(per_prompt: pd.DataFrame):
    """Answer length in words per prompt, one dot per variant; empty answers are a red x at 0
    (counted in the legend and the title), so an adapter that answers nothing cannot look fine."""
    if isinstance(per_prompt, pd.DataFrame) and per_prompt.empty:  # nothing compared yet
        per_prompt = pd.DataFrame(columns=_PER_PROMPT_COLUMNS)
    _require(per_prompt, _PER_PROMPT_COLUMNS, "per_prompt")
    var = variants(per_prompt)
    prompts = sorted(per_prompt["prompt_index"].unique())
    pos = {p: i for i, p in enumerate(prompts)}
    n = len(var)
    fig, axes = _figure(figsize=(max(7.0, 0.22 * len(prompts) * max(n, 2) ** 0.5 + 4), 4.2))
    ax = axes[0, 0]
    if per_prompt.empty:
        _note(ax, "no answers")
        return fig
    span = 0.8
    offsets = (np.arange(n) - (n - 1) / 2) * (span / max(n, 1))
    empty_x = []
    for off, row in zip(offsets, var.itertuples()):
        rows = per_prompt[per_prompt["variant"] == row.variant]
        xs = rows["prompt_index"].map(pos).to_numpy(dtype=float) + off
        is_empty = rows["empty"].astype(bool).to_numpy()
        k = int(is_empty.sum())
        label = row.variant + (f" ({k} empty)" if k else "")
        ax.scatter(xs[~is_empty], rows["words"].to_numpy(dtype=float)[~is_empty], s=22,
                   color=[row.color], edgecolor=row.base_color, linewidth=0.6,
                   label=label, zorder=3, gid=f"words:{row.variant}")
        empty_x.extend(xs[is_empty])
    n_empty = len(empty_x)
    if n_empty:
        ax.scatter(empty_x, np.zeros(n_empty), marker="x", s=40, color=_EMPTY_COLOR,
                   linewidth=1.6, label=f"empty answer ({n_empty})", zorder=4, gid="empty")
    top = max(1.0, float(np.nanmax(per_prompt["words"].to_numpy(dtype=float), initial=0)))
    ax.set_ylim(-0.05 * top, top * 1.08)
    step = max(1, math.ceil(len(prompts) / 30))
    ax.set_xticks(range(0, len(prompts), step), [str(p) for p in prompts[::step]], fontsize=8)
    for i in range(len(prompts) - 1):
        ax.axvline(i + 0.5, color="0.9", linewidth=0.6, zorder=0)
    ax.set_xlabel("prompt (index)")
    ax.set_ylabel("answer length (words)")
    title = "Answer length per prompt"
    if n_empty:
        title += f": {n_empty} empty answer{'s' if n_empty > 1 else ''} (red x)"
    ax.set_title(title, color=_EMPTY_COLOR if n_empty else "black")
    ax.legend(fontsize=_label_size(n), loc="upper left", bbox_to_anchor=(1.01, 1),
              ncol=1 if n <= 12 else 2, frameon=False)
    return fig


_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")


def word_counts(texts: Sequence[str], *, stopwords=None) -> Counter:
    """Lower-cased word counts without stop words (wordcloud's list) and one-letter words."""
    if stopwords is None:
        from wordcloud import STOPWORDS
        stopwords = STOPWORDS
    stop = {s.lower() for s in stopwords}
    words = (w.replace("’", "'") for t in texts for w in _WORD.findall((t or "").lower()))
    return Counter(w for w in words if len(w) > 1 and w not in stop)


def word_clouds(answers: Mapping[str, Sequence[str]], *, max_words: int = 60,
                bases: Mapping[str, str] | None = None):
    """A grid of word clouds, one per variant (stop words removed), in the base model's colour.
    A variant with no words gets a "no words" panel. ``bases`` maps variant -> base model; by
    default it is read from the name ("Qwen3-14B V2" -> "Qwen3-14B")."""
    names = list(answers)
    n = len(names)
    ncols = min(4, max(n, 1))
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = _figure(nrows, ncols, figsize=(3.6 * ncols, 2.9 * nrows))
    if not n:
        _note(axes[0, 0], "no variants")
        return fig
    from wordcloud import WordCloud
    base_of = {name: (bases or {}).get(name) or _split_variant(name)[0] for name in names}
    family = base_colors(list(base_of.values()))
    for ax, name in zip(axes.flat, names):
        texts = answers[name]
        counts = word_counts(texts)
        total = sum(counts.values())
        ax.set_title(f"{name}\n{len(texts)} answers, {total} words kept", fontsize=9)
        if not counts:
            empty = sum(1 for t in texts if not (t or "").strip())
            _note(ax, "no words" + (f"\n({empty} of {len(texts)} answers empty)" if texts else ""))
            for side in ax.spines.values():
                side.set_color(_EMPTY_COLOR)
            continue
        color = family[base_of[name]]
        wc = WordCloud(width=420, height=300, background_color="white", max_words=max_words,
                       random_state=0, color_func=lambda *a, **k: color, prefer_horizontal=0.95)
        wc.generate_from_frequencies(counts)
        ax.imshow(wc.to_array(), interpolation="bilinear")
        ax.set_axis_off()
    for ax in axes.flat[n:]:
        fig.delaxes(ax)
    return fig


def keyword_heatmap(keywords: pd.DataFrame, *, fmt: str = ".1f"):
    """Variants x keywords (occurrences per 1,000 words), every cell annotated; the variant
    labels take their base model's colour."""
    if not isinstance(keywords, pd.DataFrame):
        raise TypeError("keywords must be a DataFrame: index = variant, columns = keywords")
    nrows, ncols = keywords.shape
    fig, axes = _figure(figsize=(max(5.0, 0.62 * ncols + 3), max(2.6, 0.42 * nrows + 1.6)))
    ax = axes[0, 0]
    if not nrows or not ncols:
        _note(ax, "no keywords" if nrows else "no variants")
        return fig
    import seaborn as sns
    data = keywords.apply(pd.to_numeric, errors="coerce").astype(float)
    sns.heatmap(data, ax=ax, annot=True, fmt=fmt, cmap="rocket_r", linewidths=0.5,
                annot_kws={"fontsize": 8 if ncols <= 12 else 6},
                cbar_kws={"label": "per 1,000 words"})
    ax.set_xlabel("keyword")
    ax.set_ylabel("")
    ax.set_xticks(np.arange(ncols) + 0.5, [str(c) for c in data.columns], rotation=45,
                  ha="right", rotation_mode="anchor", fontsize=_label_size(ncols))
    ax.set_yticks(np.arange(nrows) + 0.5, [str(i) for i in data.index], rotation=0,
                  fontsize=_label_size(nrows))
    family = base_colors([_split_variant(str(i))[0] for i in data.index])
    for label in ax.get_yticklabels():
        label.set_color(family[_split_variant(label.get_text())[0]])
    ax.set_title("Keywords per 1,000 words")
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


# ---------------------------------------------------------------- the paired delta table

_STATS = ("est", "low", "high", "n")


def delta_table(per_prompt: pd.DataFrame, metrics: Sequence[str], *, n_boot: int = 2000,
                alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """Each tuned variant against its own base model on the same prompts (matched on ``base``
    and ``prompt_index``): per metric the mean of the per-prompt differences (tuned - base) and
    a percentile bootstrap interval of that mean (``metrics.bootstrap_ci``; prompts where either
    side is nan are left out, ``n`` counts the pairs used).

    Index: tuned variants. Columns: ``("base", "")``, ``("version", "")``, then
    ``(metric, "est" | "low" | "high" | "n")`` per metric, then ``("note", "")``. A tuned variant
    whose base model is not in ``per_prompt`` stays in the table with nan and a note.
    Lower-is-better metrics (``LOWER_IS_BETTER``) improve when the difference is negative.
    :func:`format_delta_table` makes the display version."""
    from helpers.evaluation import metrics as metrics_mod
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    if isinstance(per_prompt, pd.DataFrame) and per_prompt.empty:  # nothing compared yet
        per_prompt = pd.DataFrame(columns=[*_PER_PROMPT_COLUMNS, *metrics])
    _require(per_prompt, _PER_PROMPT_COLUMNS, "per_prompt")
    unknown = [m for m in metrics if m not in per_prompt.columns]
    if unknown:
        numeric = list(per_prompt.select_dtypes("number").columns)
        raise ValueError(f"metrics {unknown} are not columns of per_prompt; it has {numeric}")
    columns = pd.MultiIndex.from_tuples(
        [("base", ""), ("version", "")] + [(m, s) for m in metrics for s in _STATS]
        + [("note", "")])
    var = variants(per_prompt)
    tuned = var[var["version"] != "base"]
    base_rows = per_prompt[per_prompt["version"] == "base"]
    dup = base_rows.duplicated(["base", "prompt_index"])
    if dup.any():
        first = base_rows[dup].iloc[0]
        raise ValueError(f"base model {first['base']!r} has more than one answer to prompt "
                         f"{first['prompt_index']}: per_prompt needs one row per variant and "
                         "prompt")
    records = []
    for row in tuned.itertuples():
        rec = {("base", ""): row.base, ("version", ""): row.version, ("note", ""): ""}
        mine = per_prompt[per_prompt["variant"] == row.variant]
        theirs = base_rows[base_rows["base"] == row.base]
        if theirs.empty:
            rec[("note", "")] = (f"no base model {row.base!r} in the comparison: nothing to "
                                 "pair with")
            log.warning("delta_table: %s has no base model %r in per_prompt; its row is nan",
                        row.variant, row.base)
            for m in metrics:
                rec.update({(m, s): np.nan for s in _STATS})
                rec[(m, "n")] = 0
            records.append(rec)
            continue
        pairs = mine.merge(theirs, on="prompt_index", suffixes=("", "_base"), how="left",
                           validate="many_to_one")
        unmatched = int(pairs["variant_base"].isna().sum())
        if unmatched:
            rec[("note", "")] = (f"{unmatched} prompt(s) the base model did not answer were "
                                 "left out")
        for m in metrics:
            diff = (pairs[m].astype(float) - pairs[f"{m}_base"].astype(float)).to_numpy()
            diff = diff[np.isfinite(diff)]
            if len(diff):
                est, low, high = metrics_mod.bootstrap_ci(diff, n_boot=n_boot, alpha=alpha,
                                                          seed=seed, stat=np.mean)
            else:
                est = low = high = np.nan
            rec.update({(m, "est"): est, (m, "low"): low, (m, "high"): high,
                        (m, "n"): len(diff)})
        records.append(rec)
    table = pd.DataFrame.from_records(records, index=pd.Index(tuned["variant"], name="variant"),
                                      columns=columns) if records else \
        pd.DataFrame(columns=columns, index=pd.Index([], name="variant"))
    for m in metrics:
        table[[(m, "est"), (m, "low"), (m, "high")]] = table[
            [(m, "est"), (m, "low"), (m, "high")]].astype(float)
        table[(m, "n")] = table[(m, "n")].astype(int)
    return table


def _signed(x: float, digits: int) -> str:
    return "n/a" if not np.isfinite(x) else f"{x:+.{digits}f}"


def format_delta_table(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """:func:`delta_table` for display: one ``"<metric> Δ"`` column per metric reading
    ``"+0.041 [0.012, 0.070]"`` (no interval with fewer than 2 pairs), lower-is-better metrics
    marked ``(↓ better)``, then the base model and the note."""
    metrics = [m for m in dict.fromkeys(table.columns.get_level_values(0))
               if m not in ("base", "version", "note")]
    out = pd.DataFrame(index=table.index)
    out["base"] = table[("base", "")]
    for m in metrics:
        cells = []
        for est, low, high in zip(table[(m, "est")], table[(m, "low")], table[(m, "high")]):
            cell = _signed(est, digits)
            if np.isfinite(est) and np.isfinite(low) and np.isfinite(high):
                cell += f" [{low:.{digits}f}, {high:.{digits}f}]"
            cells.append(cell)
        out[f"{m} Δ" + (" (↓ better)" if m in LOWER_IS_BETTER else "")] = cells
    out["note"] = table[("note", "")]
    return out
