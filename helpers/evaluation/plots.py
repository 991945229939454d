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

The plots live beside this module and are all importable from here: ``plot_common`` (direction,
variants, colours), ``summary_plots`` (:func:`grouped_bars`, :func:`radar`, :func:`progression`),
``answer_plots`` (:func:`prompt_lengths`, :func:`word_clouds`, :func:`keyword_heatmap`) and
``deltas`` (:func:`delta_table`, :func:`format_delta_table`).
"""

from helpers.evaluation.answer_plots import keyword_heatmap, prompt_lengths, word_clouds, word_counts  # noqa: F401
from helpers.evaluation.deltas import delta_table, format_delta_table  # noqa: F401
from helpers.evaluation.plot_common import (  # noqa: F401
                                             LOWER_IS_BETTER,
                                             VERSION_ORDER,
                                             base_color,
                                             base_colors,
                                             variant_color,
                                             variants,
)
from helpers.evaluation.summary_plots import grouped_bars, progression, radar, radar_values  # noqa: F401
