"""Plots of the answers themselves: their length per prompt (empty answers marked), word clouds
per variant and the keyword heatmap."""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from helpers.evaluation.plot_common import (
    _PER_PROMPT_COLUMNS,
    _figure,
    _label_size,
    _note,
    _require,
    _split_variant,
    base_colors,
    variants,
)

_EMPTY_COLOR = "#d62728"


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
