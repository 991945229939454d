"""The paired delta table: each tuned variant against its own base model on the same prompts,
per metric the mean difference with a bootstrap interval (:func:`delta_table`), and its display
version (:func:`format_delta_table`)."""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import pandas as pd

from helpers.evaluation.intervals import bootstrap_ci
from helpers.evaluation.plot_common import _PER_PROMPT_COLUMNS, LOWER_IS_BETTER, _require, variants

log = logging.getLogger(__name__)

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
                est, low, high = bootstrap_ci(diff, n_boot=n_boot, alpha=alpha, seed=seed,
                                              stat=np.mean)
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
