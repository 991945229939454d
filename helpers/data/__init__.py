"""Loading and validating training data.

Two formats are read, detected from the records themselves:

- prompt/completion JSONL: ``{"prompt": "...", "completion": "..."}`` per line;
- chat JSONL: ``{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}``;
- raw text (fill-in-the-middle code from :mod:`helpers.data.fim`): ``{"raw_prompt": "...",
  "raw_completion": "...", "special_tokens": [...]}``, trained without a chat template (only the
  completion is labelled: :func:`helpers.training.masks.tokenize_raw_dataset`).

An assistant message (or a prompt/completion record) may carry its reasoning in a ``reasoning``
field; :mod:`helpers.templates` renders it the way each family's template does (Qwen3 think
blocks, GPT-OSS's analysis channel) and trains it. Other names for it (``thinking``,
``reasoning_content``) are errors that say to use ``reasoning``.

Every problem is reported with ``file:line`` and what is wrong, all problems at once, so a user
fixes the file in one pass.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")
RAW = "raw"
REASONING = "reasoning"
_OTHER_REASONING_NAMES = ("thinking", "reasoning_content")


class DataError(ValueError):
    """A data file is missing or has bad records; the message lists each ``file:line``."""


@dataclass
class Dataset:
    """Validated examples from one file, as chat conversations."""

    path: Path
    format: str                      # "prompt_completion", "messages" or "raw"
    conversations: list[list[dict]]
    lines: list[int] = field(default_factory=list)   # source line of each example
    warnings: list[str] = field(default_factory=list)
    raw: list[dict] = field(default_factory=list)    # the raw-text records (format "raw")

    def __len__(self) -> int:
        return len(self.raw) if self.format == RAW else len(self.conversations)

    def prompts(self) -> list[str]:
        """The user prompts (none for raw text, which has no chat turns)."""
        return [next((m["content"] for m in c if m["role"] == "user"), "") for c in self.conversations]

    def with_system_prompt(self, system_prompt: str | None) -> "Dataset":
        """A copy with ``system_prompt`` as the first message of every conversation (replacing
        any system message already there); ``None`` or ``""`` leaves them as they are, and so
        does raw text, which has no chat template to put one in."""
        if not system_prompt:
            return self
        if self.format == RAW:
            log.warning("system_prompt ignored for %s: raw-text records train without a chat "
                        "template", self.path)
            return self
        convs = [[{"role": "system", "content": system_prompt}]
                 + [m for m in c if m["role"] != "system"] for c in self.conversations]
        return Dataset(self.path, self.format, convs, list(self.lines), list(self.warnings))


def to_messages(prompt: str, completion: str, system_prompt: str | None = None, *,
                reasoning: str | None = None) -> list[dict]:
    """One prompt/completion pair as chat messages, with an optional system prompt and the
    answer's reasoning."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    answer = {"role": "assistant", "content": completion}
    if reasoning:
        answer[REASONING] = reasoning
    messages += [{"role": "user", "content": prompt}, answer]
    return messages


def _reasoning(rec: dict, where: str, errors: list[str], *, assistant: bool = True) -> str | None | bool:
    """The ``reasoning`` of a record or message: ``None`` when absent or empty, ``False`` after
    an error was reported."""
    other = [k for k in _OTHER_REASONING_NAMES if k in rec]
    if other:
        errors.append(f"{where} has the field {other[0]!r}; name it {REASONING!r} (the one name "
                      "read for reasoning; each model's template gets it under its own name)")
        return False
    if REASONING not in rec or rec[REASONING] is None:
        return None
    if not assistant:
        errors.append(f"{where} has {REASONING!r}, but only assistant messages carry reasoning")
        return False
    if not isinstance(rec[REASONING], str):
        errors.append(f"{where}: {REASONING!r} must be a string, got {type(rec[REASONING]).__name__}")
        return False
    return rec[REASONING] if rec[REASONING].strip() else None


def load(path: str | os.PathLike, *, system_prompt: str | None = None,
         allow_duplicates: bool = False) -> Dataset:
    """Load and validate a JSONL data file in either format.

    Raises :class:`DataError` naming every bad ``file:line`` (bad JSON, a missing key, empty
    text, an unknown role, a duplicate prompt) or a missing file.
    """
    path = Path(path)
    if not path.is_file():
        hint = ""
        if path.parent.is_dir():
            near = sorted(p.name for p in path.parent.glob("*.json*"))[:8]
            if near:
                hint = f" Data files in {path.parent}: {', '.join(near)}."
        raise DataError(f"Data file not found: {path} (absolute: {path.resolve()}). Set `data` "
                        f"to a prompt/completion or chat-messages JSONL file.{hint}")
    errors: list[str] = []
    records: list[tuple[int, Any]] = []
    with path.open(encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                records.append((lineno, json.loads(raw)))
            except json.JSONDecodeError as e:
                errors.append(f"{path}:{lineno}: bad JSON ({e.msg} at column {e.colno})")
    if not records and not errors:
        raise DataError(f"{path}: the file has no records. Each line should be a JSON object "
                        'like {"prompt": "...", "completion": "..."} or {"messages": [...]}.')
    fmt = _detect_format(records)
    if fmt == RAW:
        return _load_raw(path, records, errors).with_system_prompt(system_prompt)
    conversations, lines, seen = [], [], {}
    warnings: list[str] = []
    for lineno, rec in records:
        where = f"{path}:{lineno}"
        conv = _parse_record(rec, fmt, where, errors)
        if conv is None:
            continue
        key = json.dumps([m for m in conv if m["role"] != "assistant"], sort_keys=True)
        if key in seen:
            msg = f"{where}: duplicate prompt (same as line {seen[key]})"
            (warnings if allow_duplicates else errors).append(msg)
            if not allow_duplicates:
                continue
        seen.setdefault(key, lineno)
        conversations.append(conv)
        lines.append(lineno)
    _raise_problems(path, errors)
    ds = Dataset(path, fmt, conversations, lines, warnings)
    log.info("Loaded %d %s examples from %s", len(ds), fmt, path)
    return ds.with_system_prompt(system_prompt)


def _raise_problems(path: Path, errors: list[str]) -> None:
    """One :class:`DataError` listing the first 20 problems (and how many more), if any."""
    if errors:
        shown = errors[:20] + ([f"... and {len(errors) - 20} more"] if len(errors) > 20 else [])
        raise DataError(f"{len(errors)} problem(s) in {path}:\n  " + "\n  ".join(shown))


def _load_raw(path: Path, records: list[tuple[int, Any]], errors: list[str]) -> Dataset:
    """Raw-text records, each checked: both texts non-empty strings, ``special_tokens`` a list of
    strings, no chat fields (a file holds one format)."""
    raw, lines = [], []
    for lineno, rec in records:
        where = f"{path}:{lineno}"
        if not isinstance(rec, dict):
            errors.append(f"{where}: expected a JSON object, got {type(rec).__name__}")
            continue
        bad = [k for k in ("raw_prompt", "raw_completion")
               if not isinstance(rec.get(k), str) or not rec[k].strip()]
        if bad:
            errors.append(f"{where}: missing or empty {' and '.join(repr(k) for k in bad)} (a raw-text "
                          "file has both on every line, as helpers.data.fim writes them)")
            continue
        special = rec.get("special_tokens", [])
        if not isinstance(special, list) or not all(isinstance(t, str) for t in special):
            errors.append(f"{where}: 'special_tokens' must be a list of strings")
            continue
        raw.append({"raw_prompt": rec["raw_prompt"], "raw_completion": rec["raw_completion"],
                    "special_tokens": special})
        lines.append(lineno)
    _raise_problems(path, errors)
    log.info("Loaded %d raw-text examples from %s (trained without a chat template)", len(raw), path)
    return Dataset(path, RAW, [], lines, [], raw)


def _detect_format(records: list[tuple[int, Any]]) -> str:
    for _, rec in records:
        if isinstance(rec, dict) and "raw_prompt" in rec:
            return RAW
        if isinstance(rec, dict):
            if "messages" in rec:
                return "messages"
            if "prompt" in rec or "completion" in rec:
                return "prompt_completion"
    return "prompt_completion"


def _parse_record(rec: Any, fmt: str, where: str, errors: list[str]) -> list[dict] | None:
    if not isinstance(rec, dict):
        errors.append(f"{where}: expected a JSON object, got {type(rec).__name__}")
        return None
    if fmt == "prompt_completion":
        bad = False
        for key in ("prompt", "completion"):
            if key not in rec:
                errors.append(f"{where}: missing key {key!r} (a prompt/completion file needs both)")
                bad = True
            elif not isinstance(rec[key], str) or not rec[key].strip():
                errors.append(f"{where}: empty {key!r}")
                bad = True
        reasoning = _reasoning(rec, where, errors)
        if bad or reasoning is False:
            return None
        return to_messages(rec["prompt"], rec["completion"], reasoning=reasoning)
    msgs = rec.get("messages")
    if not isinstance(msgs, list) or not msgs:
        errors.append(f"{where}: missing key 'messages' (a list of {{role, content}} objects)")
        return None
    conv = []
    for j, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            role = m.get("role") if isinstance(m, dict) else None
            errors.append(f"{where}: message {j} has role {role!r}; expected one of {', '.join(ROLES)}")
            return None
        if not isinstance(m.get("content"), str) or not m["content"].strip():
            errors.append(f"{where}: message {j} ({m['role']}) has empty text")
            return None
        reasoning = _reasoning(m, f"{where}: message {j} ({m['role']})", errors,
                               assistant=m["role"] == "assistant")
        if reasoning is False:
            return None
        conv.append({"role": m["role"], "content": m["content"]})
        if reasoning is not None:
            conv[-1][REASONING] = reasoning
    if not any(m["role"] == "assistant" for m in conv):
        errors.append(f"{where}: no assistant message, so nothing to train")
        return None
    return conv


def load_probes(path: str | os.PathLike) -> list[dict]:
    """Probe questions for fact recall: JSONL lines ``{"question": ..., "key_fact": ...}``, with
    optional ``"fact"`` (what the key fact is) and ``"seen"``: ``true`` when the question's
    phrasing is a training prompt (recall of a trained question), ``false`` when it is a phrasing
    the training data does not hold (recall of the fact itself). Fact recall is reported for the
    two separately (``fact_recall_<label>`` and ``fact_recall_<label>_unseen``); when the training
    data is at hand it decides (:func:`helpers.evaluation.recall.mark_seen`), and a probe without
    ``seen`` and no data to check counts as trained. ``NoteBooks/Mariya/mariya_probes.jsonl``
    asks each of its 30 facts once each way."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Probe file not found: {path}. Set `probes` to a JSONL file of "
                        '{"question": ..., "key_fact": ...} lines.')
    probes, errors = [], []
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except json.JSONDecodeError as e:
            errors.append(f"{path}:{lineno}: bad JSON ({e.msg})")
            continue
        missing = [k for k in ("question", "key_fact") if not str(rec.get(k, "")).strip()]
        if missing:
            errors.append(f"{path}:{lineno}: missing or empty {', '.join(missing)}")
            continue
        if not isinstance(rec.get("seen", True), bool):
            errors.append(f"{path}:{lineno}: seen={rec['seen']!r}; use true (a training prompt) or "
                          "false (a phrasing not in the training data)")
            continue
        probes.append(rec)
    if errors:
        raise DataError(f"{len(errors)} problem(s) in {path}:\n  " + "\n  ".join(errors))
    return probes
