"""The data card of a fine-tuning run: ``data_card.json`` and ``data_card.md`` in the run folder.

What the adapter was trained on, as checksums anyone can recheck: the sha256 of each source book
(when the data preparation recorded them in ``dataprep.json``), of the training set and of the
other files of its data folder (the V1/V2 sets, ``heldout.json``, the question cache), the
training set's size, the held-out split (regions, passage count, sha256 of ``heldout.json``),
the recipe's options (e.g. out-of-scope refusal examples) and, once measured, the recitation
and copying figures (:func:`add_figures`; the comparison adds its own).

:class:`helpers.pipeline.finetune.FineTuneRun` writes it when a run finishes (:func:`write`).
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from helpers.core import clock
from helpers.core import paths as project_paths
from helpers.core.files import write_atomic, write_json
from helpers.data import provenance

log = logging.getLogger(__name__)

CARD = "data_card.json"
CARD_MD = "data_card.md"
VERSION = 1

#: files of a persona's data folder that describe what a run trained on (prep.write_sets)
DATA_FILES = ("v1_train.jsonl", "v2_train.jsonl", "heldout.json", "dataprep.json", "questions.jsonl")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _heldout(path: Path) -> dict | None:
    if not path.is_file():
        return None
    held = _read_json(path)
    passages = held.get("heldout", [])
    return {"file": path.name, "sha256": provenance.file_sha256(path), "passages": len(passages),
            "regions": held.get("regions", []),
            "passage_sha256": [p.get("sha256") for p in passages if p.get("sha256")]}


def build(record: dict[str, Any]) -> dict[str, Any]:
    """The card's content from a run record (``run.json`` as a dict): what it names as its data,
    hashed now."""
    data = record.get("data", {})
    params = record.get("parameters", {})
    raw = data.get("path") or params.get("data")
    card: dict[str, Any] = {
        "card_version": VERSION, "written": clock.now(), "run": record.get("name"),
        "persona": params.get("persona"), "recipe": params.get("recipe"),
        "model": {k: record.get("model", {}).get(k) for k in ("requested", "profile", "smoke")},
        "training_set": None, "data_files": [], "books": None, "books_folder": None,
        "heldout": None, "recipe_options": {}, "figures": {}, "notes": []}
    path = project_paths.path(raw) if raw else None
    if path is None or not path.is_file():
        card["notes"].append(f"training set {raw!r} not found: no checksums" if raw else
                             "the run record names no training set")
        return card
    card["training_set"] = {"path": str(path), **provenance.file_entry(path),
                            "examples": data.get("examples"), "format": data.get("format"),
                            "replay_examples": data.get("replay_examples", 0)}
    folder = path.parent
    card["data_files"] = [provenance.file_entry(folder / f) for f in DATA_FILES
                          if (folder / f).is_file() and folder / f != path]
    card["heldout"] = _heldout(folder / "heldout.json")
    if card["heldout"] is None:
        card["notes"].append("no heldout.json beside the training set: the held-out split is unknown")
    prep = _read_json(folder / "dataprep.json")
    if prep.get("books") is not None:
        card["books"], card["books_folder"] = prep["books"], prep.get("books_folder")
    elif prep:
        card["notes"].append("dataprep.json records no book checksums (sets made before data "
                             "cards): rebuild the sets to record them")
    card["recipe_options"] = prep.get("recipe_options", {})
    return card


def write(run_dir: str | os.PathLike, record: dict[str, Any]) -> Path:
    """Write ``data_card.json`` and ``data_card.md`` in ``run_dir`` from its run record, keeping
    the figures an earlier card held."""
    run_dir = Path(run_dir)
    card = build(record)
    card["figures"] = _read_json(run_dir / CARD).get("figures", {})
    return _save(run_dir, card)


def add_figures(run_dir: str | os.PathLike, figures: dict[str, Any], *, source: str) -> Path:
    """Add ``figures`` (recitation, copying, ...) under ``figures.<source>`` of the run's card,
    building the card from ``run.json`` first when there is none."""
    run_dir = Path(run_dir)
    card = _read_json(run_dir / CARD)
    if not card:
        card = build(_read_json(run_dir / "run.json"))
    card.setdefault("figures", {})[source] = {"measured": clock.now(), **figures}
    return _save(run_dir, card)


def _finite(x: Any) -> Any:
    """nan (a figure not measured) as null: the card stays strict JSON."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return None if isinstance(x, float) and math.isnan(x) else x


def _save(run_dir: Path, card: dict) -> Path:
    card = _finite(card)
    path = write_json(run_dir / CARD, card)
    write_atomic(run_dir / CARD_MD, markdown(card))
    log.info("Data card: %s", path)
    return path


def _fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def markdown(card: dict[str, Any]) -> str:
    """The card as a short markdown page."""
    lines = [f"# Data card: {card.get('run')}", "",
             f"Persona: {card.get('persona') or 'n/a'}; recipe: {card.get('recipe') or 'n/a'}; "
             f"model: {card.get('model', {}).get('requested')}. Written {card.get('written')}.", ""]
    ts = card.get("training_set")
    if ts:
        lines += ["## Training set", f"- `{ts['file']}`: {ts.get('examples')} examples, {ts['bytes']} bytes, "
                  f"sha256 `{ts['sha256']}`" + (f"; plus {ts['replay_examples']} replay examples"
                                                 if ts.get("replay_examples") else "")]
        lines += [f"- `{f['file']}`: sha256 `{f['sha256']}`" for f in card.get("data_files", [])]
        lines.append("")
    books = card.get("books")
    lines.append("## Books")
    lines += ([f"- `{b['file']}`: sha256 `{b['sha256']}`" for b in books] if books
              else ["- not recorded"])
    lines.append("")
    held = card.get("heldout")
    lines.append("## Held-out split")
    if held:
        lines.append(f"- {held['passages']} passages in {len(held['regions'])} region(s); "
                     f"`{held['file']}` sha256 `{held['sha256']}`")
        lines += [f"  - {r.get('book')}: {r.get('chapter') or 'pages'} {r.get('first_page')}-"
                  f"{r.get('last_page')} ({r.get('passages')} passages)" for r in held["regions"]]
    else:
        lines.append("- unknown")
    if card.get("recipe_options"):
        lines += ["", "## Recipe options"] + [f"- {k}: {v}" for k, v in card["recipe_options"].items()]
    for source, figs in card.get("figures", {}).items():
        lines += ["", f"## Figures ({source}, {figs.get('measured')})"]
        lines += [f"- {k}: {_fmt(v)}" for k, v in figs.items() if k != "measured" and not isinstance(v, dict)]
        for k, v in figs.items():
            if isinstance(v, dict):
                lines.append(f"- {k}: " + ", ".join(f"{a}={_fmt(b)}" for a, b in v.items()))
    if card.get("notes"):
        lines += ["", "## Notes"] + [f"- {n}" for n in card["notes"]]
    return "\n".join(lines) + "\n"
