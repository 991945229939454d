"""The tables a fine-tuning run shows: answers before and after (with collapsed answers flagged)
and what was exported. Plain functions of a run's answers and folders; the notebooks call them as
``finetune.before_after_table`` / ``finetune.export_table`` (re-exported there)."""

from __future__ import annotations

from typing import Any, Sequence

from helpers import export
from helpers.evaluation import health, recall


def export_table(run, formats: Sequence[str], question: str):
    """Export the run's adapter in ``formats`` (adapter, merged, gguf) beside it, in
    ``<run>/export``; each export is reloaded and asked ``question``. A table of what was written,
    or a one-line note when nothing was asked for."""
    import pandas as pd
    if not formats:
        return pd.DataFrame([{"export": "none asked for: set the export parameter to adapter, "
                                        "merged and/or gguf"}]).set_index("export")
    with run.record.phase("export"):
        rows = export.export_all(run.output_dir, run.output_dir / "export", tuple(formats), question,
                                 system_prompt=run.system_prompt)
    run.record.update("exports", {k: _export_entry(v) for k, v in rows.items()})
    table = pd.DataFrame(rows).T
    return table[[c for c in ("status", "size_mb", "outtype", "outtype_asked", "answer", "reason",
                              "seconds", "path") if c in table]]


def _export_entry(row: dict[str, Any]) -> dict[str, Any]:
    """What run.json keeps of an :func:`helpers.export.export_all` row: status, path, size, why it
    was skipped or failed (``reason``, None when ok) and, for a GGUF, the weight type written
    (``outtype``) and the one asked for when it differs (``outtype_asked``: GPT-OSS is MXFP4)."""
    entry = {k: row.get(k) for k in ("status", "path", "size_mb", "reason")}
    entry.update({k: row[k] for k in ("outtype", "outtype_asked") if k in row})
    return entry


def before_after_table(questions: Sequence[str], before: Sequence[str], after: Sequence[str],
                       key_facts: Sequence[str] | None = None, seen: Sequence[bool] | None = None):
    """A pandas DataFrame: question, base answer, tuned answer (and whether each has the fact;
    with ``seen``, whether the question's phrasing was a training prompt). A tuned answer that
    is empty or one piece repeated is flagged in the column "tuned answer collapsed"
    (:func:`helpers.evaluation.health.collapsed`), which appears only when one is."""
    import pandas as pd
    df = pd.DataFrame({"question": list(questions), "base answer": list(before),
                       "tuned answer": list(after)})
    flags = [health.collapsed(a) for a in after]
    if any(flags):
        df["tuned answer collapsed"] = [f or "" for f in flags]
    if seen is not None:
        df.insert(1, "phrasing", ["trained" if s else "unseen" for s in seen])
    if key_facts is not None:
        df.insert(1, "key fact", list(key_facts))
        df["base has fact"] = [recall.contains_fact(a, k) for a, k in zip(before, key_facts)]
        df["tuned has fact"] = [recall.contains_fact(a, k) for a, k in zip(after, key_facts)]
    return df
