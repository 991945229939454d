"""Chat-log exports to our chat messages: Claude.ai and ChatGPT data exports.

Both exports are a ``conversations.json`` holding a list of conversations.

- Claude.ai: each conversation has ``chat_messages``, each with ``sender`` (``"human"`` or
  ``"assistant"``) and its text in ``content`` blocks (``{"type": "text", "text": ...}``; other
  block types, such as tool use, tool results and thinking, are left out) or, in older exports,
  in ``text``. Where messages carry ``parent_message_uuid`` (edited or retried turns), the
  conversation is the path from the last message back to the root.
- ChatGPT: each conversation has a ``mapping`` of node id -> ``{"message", "parent",
  "children"}`` and a ``current_node``; the conversation as the user last saw it is the path from
  ``current_node`` back to the root (other branches, from edits and regenerations, are left
  out). Kept: ``user`` and ``assistant`` messages whose ``content_type`` is ``text`` or
  ``multimodal_text`` (their string parts), sent to ``all``. Left out: system and tool messages,
  assistant messages addressed to a tool, hidden ones, and other content types (code run by a
  tool, thoughts, custom instructions).

Then, in both: consecutive messages of one role are joined with a blank line (an answer split
around a tool call is one answer); leading assistant messages and a last unanswered user message
are dropped; a conversation needs ``min_turns`` answered user turns. ``drop_attachments=True``
leaves out conversations with files or images (their text alone may not make sense).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FORMATS = ("claude", "chatgpt")


class ChatLogError(ValueError):
    """An export could not be read; the message names the setting or the fix."""


def detect(raw: Any) -> str | None:
    """``"claude"`` or ``"chatgpt"`` from the first conversation, else ``None``."""
    if isinstance(raw, list) and raw and isinstance(raw[0], dict):
        if "chat_messages" in raw[0]:
            return "claude"
        if "mapping" in raw[0]:
            return "chatgpt"
    return None


def _tidy(turns: list[tuple[str, str]], min_turns: int) -> list[dict] | None:
    conv: list[dict] = []
    for role, text in turns:
        text = text.strip()
        if not text:
            continue
        if conv and conv[-1]["role"] == role:
            conv[-1]["content"] += "\n\n" + text
        elif conv or role == "user":
            conv.append({"role": role, "content": text})
    if conv and conv[-1]["role"] == "user":
        conv.pop()
    answered = sum(1 for m in conv if m["role"] == "assistant")
    return conv if answered and answered >= min_turns else None


def _claude_text(m: dict) -> str:
    blocks = m.get("content")
    if isinstance(blocks, list) and blocks:
        return "\n\n".join(b.get("text", "") for b in blocks
                           if isinstance(b, dict) and b.get("type") == "text")
    return m.get("text") or ""


def _claude_path(msgs: list[dict]) -> list[dict]:
    if not msgs or not all("parent_message_uuid" in m for m in msgs):
        return msgs
    by_id = {m.get("uuid"): m for m in msgs}
    path, node, seen = [], msgs[-1], set()
    while node is not None and node.get("uuid") not in seen:
        seen.add(node.get("uuid"))
        path.append(node)
        node = by_id.get(node.get("parent_message_uuid"))
    return path[::-1]


def claude_conversation(c: dict, *, min_turns: int = 1,
                        drop_attachments: bool = False) -> tuple[list[dict] | None, str]:
    """One Claude.ai conversation as messages (``None`` when left out) and why it was left out."""
    msgs = _claude_path([m for m in c.get("chat_messages") or [] if isinstance(m, dict)])
    if drop_attachments and any(m.get("attachments") or m.get("files") for m in msgs):
        return None, "attachments"
    roles = {"human": "user", "assistant": "assistant"}
    turns = [(roles[m.get("sender")], _claude_text(m)) for m in msgs if m.get("sender") in roles]
    conv = _tidy(turns, min_turns)
    return conv, "" if conv else "too short"


def _chatgpt_path(c: dict) -> list[dict]:
    mapping = c.get("mapping") or {}
    node_id = c.get("current_node")
    if node_id not in mapping:   # no current node recorded: follow the last child from the root
        roots = [k for k, v in mapping.items() if not v.get("parent")]
        node_id = roots[0] if roots else None
        while node_id and mapping[node_id].get("children"):
            node_id = mapping[node_id]["children"][-1]
    path, seen = [], set()
    while node_id in mapping and node_id not in seen:
        seen.add(node_id)
        path.append(mapping[node_id])
        node_id = mapping[node_id].get("parent")
    return [n["message"] for n in path[::-1] if isinstance(n.get("message"), dict)]


def _chatgpt_turn(m: dict) -> tuple[str, str, bool] | None:
    """``(role, text, has_attachment)`` of a message to keep, else ``None``."""
    role = (m.get("author") or {}).get("role")
    meta = m.get("metadata") or {}
    content = m.get("content") or {}
    if role not in ("user", "assistant") or m.get("recipient", "all") != "all":
        return None
    if meta.get("is_visually_hidden_from_conversation"):
        return None
    if content.get("content_type") not in ("text", "multimodal_text"):
        return None
    parts = content.get("parts") or []
    text = "\n\n".join(p for p in parts if isinstance(p, str) and p.strip())
    attached = bool(meta.get("attachments")) or any(not isinstance(p, str) for p in parts)
    return ("user" if role == "user" else "assistant"), text, attached


def chatgpt_conversation(c: dict, *, min_turns: int = 1,
                         drop_attachments: bool = False) -> tuple[list[dict] | None, str]:
    """One ChatGPT conversation (the branch shown last) as messages, or ``None`` and why."""
    turns = [t for t in map(_chatgpt_turn, _chatgpt_path(c)) if t is not None]
    if drop_attachments and any(att for _, _, att in turns):
        return None, "attachments"
    conv = _tidy([(r, t) for r, t, _ in turns], min_turns)
    return conv, "" if conv else "too short"


def load_export(path: str | os.PathLike, fmt: str = "auto", *, min_turns: int = 1,
                drop_attachments: bool = False) -> tuple[list[list[dict]], dict[str, Any]]:
    """The conversations of a Claude.ai or ChatGPT ``conversations.json`` and a report (read,
    kept, left out and why). ``fmt`` is ``"auto"`` (from the file), ``"claude"`` or
    ``"chatgpt"``."""
    path = Path(path)
    if not path.is_file():
        raise ChatLogError(f"Export file not found: {path} (absolute: {path.resolve()}). Pass the "
                           "conversations.json from the Claude.ai or ChatGPT data export.")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ChatLogError(f"{path} is not JSON ({e.msg} at line {e.lineno}); pass the "
                           "conversations.json from the export, unzipped.") from e
    if isinstance(raw, dict) and isinstance(raw.get("conversations"), list):
        raw = raw["conversations"]
    found = detect(raw)
    if fmt == "auto":
        fmt = found or ""
    if fmt not in FORMATS:
        raise ChatLogError(
            f"{path}: unknown export format (format={fmt!r}). Expected a list of conversations "
            "with 'chat_messages' (Claude.ai) or 'mapping' (ChatGPT); set format to one of "
            f"{', '.join(FORMATS)}, or use `datasets` for a file of messages or prompt/completion "
            "columns.")
    if found and found != fmt:
        raise ChatLogError(f"{path} looks like a {found} export, not {fmt}; set format={found!r} "
                           "(or 'auto').")
    one = claude_conversation if fmt == "claude" else chatgpt_conversation
    convs, why = [], {}
    for c in raw if isinstance(raw, list) else []:
        conv, reason = one(c, min_turns=min_turns, drop_attachments=drop_attachments) \
            if isinstance(c, dict) else (None, "not an object")
        if conv is None:
            why[reason] = why.get(reason, 0) + 1
        else:
            convs.append(conv)
    report = {"format": fmt, "conversations": len(raw) if isinstance(raw, list) else 0,
              "kept": len(convs), "left_out": why}
    log.info("%s export %s: %s", fmt, path, report)
    return convs, report
