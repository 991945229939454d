"""The comparison's plots and paired delta table (helpers/compare_plots.py), on small frames."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402
from matplotlib.container import ErrorbarContainer  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from helpers.evaluation import plots as cp  # noqa: E402

A, B = "Qwen3-14B", "GPT-OSS 20B"
VARIANTS = [(A, A, "base"), (f"{A} V1", A, "V1"), (f"{A} V2", A, "V2"), (B, B, "base")]
PROMPTS = 5
WORDS = ["patience", "workshop", "hands", "wood", "craft", "slowly", "grain", "plane"]
METRICS = ["tfidf", "delta", "words", "perplexity"]


def _metric(variant_i: int, prompt: int, metric: str) -> float:
    """Deterministic per-prompt values: easy to compute the paired differences by hand."""
    return {"tfidf": 0.1 * variant_i + 0.01 * prompt,
            "delta": 2.0 - 0.3 * variant_i + 0.05 * prompt ** 2}[metric]


def make_per_prompt(variants=VARIANTS, empty=((B, 2),)) -> pd.DataFrame:
    rows = []
    for vi, (variant, base, version) in enumerate(variants):
        for p in range(PROMPTS):
            is_empty = (variant, p) in set(empty)
            answer = "" if is_empty else " ".join(WORDS[(vi + p + k) % len(WORDS)]
                                                  for k in range(6 + p))
            row = dict(variant=variant, base=base, version=version, prompt_index=p,
                       prompt=f"question {p}?", answer=answer,
                       words=0 if is_empty else len(answer.split()), empty=is_empty)
            for m in ("tfidf", "delta", "longest_copy_share", "ngram_overlap",
                      "mean_sentence_words", "type_token_ratio"):
                row[m] = np.nan if is_empty else _metric(vi, p, m) if m in ("tfidf", "delta") \
                    else 0.1 * vi
            rows.append(row)
    return pd.DataFrame(rows)


def make_summary(variants=VARIANTS) -> pd.DataFrame:
    rows = []
    for vi, (variant, base, version) in enumerate(variants):
        for m in METRICS:
            value = {"tfidf": 0.2 + 0.1 * vi, "delta": 1.5 - 0.2 * vi, "words": 40.0 + vi,
                     "perplexity": 20.0 - vi}[m]
            has_ci = m != "perplexity"  # per-model held-out: no interval
            rows.append(dict(variant=variant, base=base, version=version, metric=m, value=value,
                             low=value - 0.05 if has_ci else np.nan,
                             high=value + 0.05 if has_ci else np.nan))
    return pd.DataFrame(rows)


def render(fig, tmp_path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    fig.savefig(path, dpi=50)
    assert path.stat().st_size > 1000


def luminance(rgb) -> float:
    r, g, b = to_rgb(rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


# ---------------------------------------------------------------- colours


def test_colours_are_per_base_and_shaded_per_version():
    var = cp.variants(make_summary()).set_index("variant")
    assert list(var.index) == [B, A, f"{A} V1", f"{A} V2"]  # by base, then base < V1 < V2
    assert var.loc[A, "base_color"] == var.loc[f"{A} V2", "base_color"] != var.loc[B, "base_color"]
    lum = [luminance(var.loc[v, "color"]) for v in (A, f"{A} V1", f"{A} V2")]
    assert lum[0] > lum[1] > lum[2]
    # the registry's models keep their colour whatever else is plotted; others never clash
    assert cp.base_colors([A, "Some Model"])[A] == cp.base_colors([A, B, "Other"])[A]
    colours = cp.base_colors([A, B, "Model X", "Model Y"])
    assert len(set(colours.values())) == 4


# ---------------------------------------------------------------- bars


def test_grouped_bars_one_panel_per_metric_with_error_bars(tmp_path):
    summary = make_summary()
    fig = cp.grouped_bars(summary, METRICS)
    assert len(fig.axes) == len(METRICS)
    n = len(VARIANTS)
    assert sum(len([p for p in ax.patches if isinstance(p, Rectangle)]) for ax in fig.axes) \
        == n * len(METRICS)
    for ax, metric in zip(fig.axes, METRICS):
        bars = [p for p in ax.patches if isinstance(p, Rectangle)]
        heights = sorted(p.get_height() for p in bars)
        want = sorted(summary.loc[summary["metric"] == metric, "value"])
        assert heights == pytest.approx(want)
        errs = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
        if metric == "perplexity":
            assert errs == []  # no interval, no error bar
        else:
            assert len(errs) == 1 and len(errs[0].lines[2][0].get_segments()) == n
        assert ("lower is better" in ax.get_title()) == (metric in cp.LOWER_IS_BETTER)
    render(fig, tmp_path, "bars")


def test_grouped_bars_unknown_metric_names_the_known_ones():
    with pytest.raises(ValueError, match=r"\['bleu'\] are not in the summary.*tfidf"):
        cp.grouped_bars(make_summary(), ["tfidf", "bleu"])
    with pytest.raises(ValueError, match="missing the columns"):
        cp.grouped_bars(make_summary().drop(columns="low"), ["tfidf"])
    doubled = pd.concat([make_summary(), make_summary().head(1)])
    with pytest.raises(ValueError, match="more than one 'tfidf' row for 'Qwen3-14B'"):
        cp.radar(doubled, ["tfidf"])


def test_grouped_bars_nan_value_is_marked_na(tmp_path):
    summary = make_summary()
    summary.loc[(summary["variant"] == B) & (summary["metric"] == "tfidf"),
                ["value", "low", "high"]] = np.nan
    fig = cp.grouped_bars(summary, ["tfidf"])
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.texts] == ["n/a"]
    assert len(ax.patches) == len(VARIANTS)
    render(fig, tmp_path, "bars_nan")


# ---------------------------------------------------------------- lengths


def _empty_marks(ax):
    return [c for c in ax.collections if c.get_gid() == "empty"]


def test_prompt_lengths_marks_the_empty_answer(tmp_path):
    per_prompt = make_per_prompt()
    fig = cp.prompt_lengths(per_prompt)
    ax = fig.axes[0]
    (marks,) = _empty_marks(ax)
    offsets = marks.get_offsets()
    assert len(offsets) == 1 and offsets[0][1] == 0
    assert offsets[0][0] == pytest.approx(2, abs=0.5)  # at prompt 2
    assert to_rgb(marks.get_facecolor()[0]) == pytest.approx(to_rgb("#d62728"))
    assert "1 empty answer" in ax.get_title()
    labels = ax.get_legend_handles_labels()[1]
    assert f"{B} (1 empty)" in labels and A in labels
    dots = sum(len(c.get_offsets()) for c in ax.collections
               if (c.get_gid() or "").startswith("words:"))
    assert dots == len(per_prompt) - 1
    render(fig, tmp_path, "lengths")


def test_prompt_lengths_all_empty_cannot_look_fine(tmp_path):
    per_prompt = make_per_prompt(empty=[(v, p) for v, _, _ in VARIANTS for p in range(PROMPTS)])
    fig = cp.prompt_lengths(per_prompt)
    (marks,) = _empty_marks(fig.axes[0])
    assert len(marks.get_offsets()) == len(per_prompt)
    assert f"{len(per_prompt)} empty answers" in fig.axes[0].get_title()
    render(fig, tmp_path, "lengths_empty")


# ---------------------------------------------------------------- word clouds and keywords


def test_word_clouds_one_panel_per_variant_and_no_words_panel(tmp_path):
    per_prompt = make_per_prompt()
    answers = {v: list(per_prompt.loc[per_prompt["variant"] == v, "answer"])
               for v, _, _ in VARIANTS}
    answers["Qwen3-32B V2"] = ["", "  ", ""]  # an adapter that answers nothing
    answers["only stop words"] = ["the and of it"]
    fig = cp.word_clouds(answers, max_words=20)
    assert len(fig.axes) == len(answers)
    by_title = {ax.get_title().split("\n")[0]: ax for ax in fig.axes}
    for name in ("Qwen3-32B V2", "only stop words"):
        assert any("no words" in t.get_text() for t in by_title[name].texts)
        assert len(by_title[name].images) == 0
    assert "3 of 3 answers empty" in by_title["Qwen3-32B V2"].texts[0].get_text()
    assert all(len(by_title[v].images) == 1 for v, _, _ in VARIANTS)
    render(fig, tmp_path, "clouds")
    render(cp.word_clouds({}), tmp_path, "clouds_none")


def test_word_counts_drop_stop_words():
    counts = cp.word_counts(["The craft of the hands, and the hands' patience. I a"])
    assert counts == {"craft": 1, "hands": 2, "patience": 1}


def test_keyword_heatmap_is_annotated(tmp_path):
    keywords = pd.DataFrame([[1.5, 0.0, 2.25], [0.5, np.nan, 3.0]], index=[A, f"{A} V2"],
                            columns=["patience", "workshop", "hands"])
    fig = cp.keyword_heatmap(keywords)
    ax = fig.axes[0]
    assert len(fig.axes) == 2  # heatmap + colour bar
    annotations = sorted(t.get_text() for t in ax.texts)
    assert annotations == sorted(["1.5", "0.0", "2.2", "0.5", "3.0"])  # nan cell left blank
    assert [t.get_text() for t in ax.get_yticklabels()] == [A, f"{A} V2"]
    render(fig, tmp_path, "heatmap")
    render(cp.keyword_heatmap(keywords.iloc[:, :0]), tmp_path, "heatmap_empty")


# ---------------------------------------------------------------- radar


def test_radar_values_flip_lower_is_better():
    values = cp.radar_values(make_summary(), ["tfidf", "delta", "perplexity"])
    # tfidf rises with the variant number (higher better): last variant best
    # delta falls with the variant number (lower better): last variant best too
    best, worst = VARIANTS[-1][0], VARIANTS[0][0]
    for m in ("tfidf", "delta", "perplexity"):
        assert values.loc[best, m] == 1.0 and values.loc[worst, m] == 0.0
    assert values.loc[f"{A} V1", "delta"] == pytest.approx(1 / 3)
    assert "delta" in cp.LOWER_IS_BETTER and "tfidf" not in cp.LOWER_IS_BETTER


def test_radar_values_one_variant_and_nan():
    summary = make_summary(VARIANTS[:1])
    assert (cp.radar_values(summary, ["tfidf", "delta"]) == 0.5).all().all()
    summary = make_summary()
    summary.loc[(summary["variant"] == A) & (summary["metric"] == "tfidf"), "value"] = np.nan
    values = cp.radar_values(summary, ["tfidf"])
    assert np.isnan(values.loc[A, "tfidf"]) and values["tfidf"].notna().sum() == 3


def test_radar_one_polygon_per_variant_labels_flipped_axes(tmp_path):
    fig = cp.radar(make_summary(), METRICS)
    ax = fig.axes[0]
    polygons = [ln for ln in ax.lines if (ln.get_gid() or "").startswith("radar:")]
    assert len(polygons) == len(VARIANTS)
    assert all(len(ln.get_xdata()) == len(METRICS) + 1 for ln in polygons)  # closed
    labels = {t.get_text().split("\n")[0]: t.get_text() for t in ax.get_xticklabels()}
    assert "flipped" in labels["delta"] and "flipped" not in labels["tfidf"]
    assert "Outward = better" in ax.get_title()
    render(fig, tmp_path, "radar")


# ---------------------------------------------------------------- progression


def test_progression_one_line_per_base_in_version_order(tmp_path):
    summary = make_summary()
    fig = cp.progression(summary, "delta")
    ax = fig.axes[0]
    lines = {ln.get_gid(): ln for ln in ax.lines if (ln.get_gid() or "").startswith("progression:")}
    assert set(lines) == {f"progression:{A}", f"progression:{B}"}
    qwen = lines[f"progression:{A}"]
    assert np.round(qwen.get_xdata()).tolist() == [0, 1, 2]
    want = [summary.query("variant == @v and metric == 'delta'")["value"].item()
            for v in (A, f"{A} V1", f"{A} V2")]
    assert list(qwen.get_ydata()) == pytest.approx(want)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["base", "V1", "V2"]
    assert any(isinstance(c, ErrorbarContainer) for c in ax.containers)
    assert "lower is better" in ax.get_title()
    render(fig, tmp_path, "progression")


def test_progression_keeps_versions_outside_order(tmp_path):
    summary = make_summary(VARIANTS + [(f"{A} V3", A, "V3")])
    fig = cp.progression(summary, "tfidf")
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["base", "V1", "V2", "V3"]
    render(fig, tmp_path, "progression_v3")


# ---------------------------------------------------------------- delta table


def test_delta_table_paired_differences_by_hand():
    per_prompt = make_per_prompt()
    # a nan on one prompt of V1 leaves that prompt out of V1's tfidf pairs only
    per_prompt.loc[(per_prompt["variant"] == f"{A} V1") & (per_prompt["prompt_index"] == 4),
                   "tfidf"] = np.nan
    table = cp.delta_table(per_prompt, ["tfidf", "delta"], n_boot=500)
    assert list(table.index) == [f"{A} V1", f"{A} V2"]  # tuned only, the base models are rows
    assert table.loc[f"{A} V1", ("base", "")] == A
    base = per_prompt[per_prompt["variant"] == A].set_index("prompt_index")
    for v in (f"{A} V1", f"{A} V2"):
        tuned = per_prompt[per_prompt["variant"] == v].set_index("prompt_index")
        for m in ("tfidf", "delta"):
            diffs = (tuned[m] - base[m]).dropna()
            row = table.loc[v]
            assert row[(m, "est")] == pytest.approx(diffs.mean())
            assert row[(m, "n")] == len(diffs)
            assert row[(m, "low")] <= row[(m, "est")] <= row[(m, "high")]
    assert table.loc[f"{A} V1", ("tfidf", "n")] == PROMPTS - 1
    # constant per-prompt difference: V2's tfidf is +0.2 on every prompt, the interval is a point
    assert table.loc[f"{A} V2", ("tfidf", "est")] == pytest.approx(0.2)
    assert table.loc[f"{A} V2", ("tfidf", "low")] == pytest.approx(0.2)
    assert (table[("note", "")] == "").all()


def test_delta_table_pairs_on_prompt_index_not_row_order():
    per_prompt = make_per_prompt().sample(frac=1, random_state=3)
    table = cp.delta_table(per_prompt, ["delta"], n_boot=200)
    assert table.loc[f"{A} V2", ("delta", "est")] == pytest.approx(-0.6)  # 2 * -0.3, every prompt


def test_delta_table_missing_base_is_nan_with_a_note():
    per_prompt = make_per_prompt()
    per_prompt = per_prompt[per_prompt["variant"] != A]
    table = cp.delta_table(per_prompt, ["tfidf"], n_boot=200)
    assert list(table.index) == [f"{A} V1", f"{A} V2"]  # kept, not dropped
    assert table[("tfidf", "est")].isna().all() and (table[("tfidf", "n")] == 0).all()
    assert table[("note", "")].str.contains(f"no base model '{A}'").all()
    shown = cp.format_delta_table(table)
    assert (shown["tfidf Δ"] == "n/a").all() and shown["note"].str.contains("no base").all()


def test_delta_table_unmatched_prompts_are_noted():
    per_prompt = make_per_prompt()
    per_prompt = per_prompt[~((per_prompt["variant"] == A) & (per_prompt["prompt_index"] == 0))]
    table = cp.delta_table(per_prompt, ["delta"], n_boot=200)
    assert table.loc[f"{A} V1", ("delta", "n")] == PROMPTS - 1
    assert "1 prompt(s)" in table.loc[f"{A} V1", ("note", "")]


def test_delta_table_errors():
    with pytest.raises(ValueError, match=r"\['bleu'\] are not columns of per_prompt"):
        cp.delta_table(make_per_prompt(), ["bleu"])
    doubled = pd.concat([make_per_prompt(), make_per_prompt().query("variant == @A")])
    with pytest.raises(ValueError, match="more than one answer to prompt"):
        cp.delta_table(doubled, ["delta"])


def test_format_delta_table():
    table = cp.delta_table(make_per_prompt(), ["tfidf", "delta"], n_boot=200)
    shown = cp.format_delta_table(table)
    assert list(shown.columns) == ["base", "tfidf Δ", "delta Δ (↓ better)", "note"]
    assert shown.loc[f"{A} V2", "tfidf Δ"] == "+0.200 [0.200, 0.200]"
    assert shown.loc[f"{A} V2", "delta Δ (↓ better)"].startswith("-0.600 [")


# ---------------------------------------------------------------- robustness


def test_every_plot_with_one_variant_all_empty(tmp_path):
    one = VARIANTS[1:2]
    per_prompt = make_per_prompt(one, empty=[(one[0][0], p) for p in range(PROMPTS)])
    summary = make_summary(one)
    summary.loc[summary["metric"] == "tfidf", ["value", "low", "high"]] = np.nan
    render(cp.grouped_bars(summary, METRICS), tmp_path, "one_bars")
    render(cp.prompt_lengths(per_prompt), tmp_path, "one_lengths")
    render(cp.word_clouds({one[0][0]: list(per_prompt["answer"])}), tmp_path, "one_clouds")
    render(cp.radar(summary, METRICS), tmp_path, "one_radar")
    render(cp.progression(summary, "tfidf"), tmp_path, "one_progression")
    table = cp.delta_table(per_prompt, ["tfidf"])
    assert table[("tfidf", "est")].isna().all()  # no base model and no words
    assert len(cp.delta_table(make_per_prompt(VARIANTS[:1]), ["tfidf"])) == 0
    # nothing compared yet: compare returns a frame without rows (or columns)
    render(cp.prompt_lengths(pd.DataFrame()), tmp_path, "none_lengths")
    assert len(cp.delta_table(pd.DataFrame(), ["tfidf"])) == 0


def test_every_plot_with_many_variants(tmp_path):
    many = [(f"Model {k}{'' if v == 'base' else ' ' + v}", f"Model {k}", v)
            for k in "ABC" for v in ("base", "V1", "V2")]
    per_prompt = make_per_prompt(many, empty=[(many[4][0], 1)])
    summary = make_summary(many)
    var = cp.variants(summary)
    assert var["base_color"].nunique() == 3 and var["color"].map(tuple).nunique() == 9
    fig = cp.grouped_bars(summary, METRICS)
    assert sum(len(ax.patches) for ax in fig.axes) == 9 * len(METRICS)
    render(fig, tmp_path, "many_bars")
    render(cp.prompt_lengths(per_prompt), tmp_path, "many_lengths")
    render(cp.radar(summary, METRICS), tmp_path, "many_radar")
    render(cp.progression(summary, "delta"), tmp_path, "many_progression")
    keywords = pd.DataFrame(np.arange(9 * 12).reshape(9, 12) / 7, index=var["variant"],
                            columns=[f"kw{i}" for i in range(12)])
    render(cp.keyword_heatmap(keywords), tmp_path, "many_heatmap")
    assert len(cp.delta_table(per_prompt, ["tfidf", "delta"], n_boot=200)) == 6
