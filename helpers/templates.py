"""Chat rendering and response-only loss masks, found from the template's own output.

No marker strings are hard-coded per family. To find what to train, a conversation is rendered
twice: once as it is, and once with every assistant message replaced by a unique sentinel. The
text around the sentinels is what the template itself adds (role headers, the empty Qwen3 think
block, Harmony's channel headers); what sits between those pieces in the real rendering is the
assistant's content. The content and the first token after it (the end-of-turn token, so the
model learns to stop) get labels; everything else is -100.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
_SENTINEL = "\u2063FTSPAN{}\u2063"  # invisible separator: never produced by a template


class MaskingError(ValueError):
    """The template's output could not be split into prompt and response, or nothing is trained."""


def render(tokenizer, messages: Sequence[dict], *, add_generation_prompt: bool = False,
           **template_kwargs) -> str:
    if not getattr(tokenizer, "chat_template", None):
        raise MaskingError(
            f"The tokenizer {type(tokenizer).__name__} ({getattr(tokenizer, 'name_or_path', '?')}) "
            "has no chat_template. Load the instruct/chat variant of the model, or set "
            "tokenizer.chat_template to the family's template before training.")
    return tokenizer.apply_chat_template(list(messages), tokenize=False,
                                         add_generation_prompt=add_generation_prompt,
                                         **template_kwargs)


def _assistant_indices(messages: Sequence[dict]) -> list[int]:
    return [i for i, m in enumerate(messages) if m.get("role") == "assistant"]


def assistant_spans(tokenizer, messages: Sequence[dict], **template_kwargs) -> tuple[str, list[tuple[int, int]]]:
    """Render ``messages`` and return ``(text, spans)``: the character span of each assistant
    message's content in ``text``, in order."""
    text = render(tokenizer, messages, **template_kwargs)
    idx = _assistant_indices(messages)
    if not idx:
        return text, []
    marked = [dict(m) for m in messages]
    for k, i in enumerate(idx):
        marked[i]["content"] = _SENTINEL.format(k)
    skeleton = render(tokenizer, marked, **template_kwargs)
    pieces = []
    rest = skeleton
    for k in range(len(idx)):
        sentinel = _SENTINEL.format(k)
        if rest.count(sentinel) != 1:
            raise MaskingError(
                f"The chat template of {getattr(tokenizer, 'name_or_path', '?')} rendered assistant "
                f"message {k} {rest.count(sentinel)} times; expected once. Response masks cannot "
                "be found for this template.")
        before, rest = rest.split(sentinel)
        pieces.append(before)
    pieces.append(rest)

    spans = []
    pos = 0
    if not text.startswith(pieces[0]):
        raise MaskingError("The template renders the text before the first answer differently "
                           "when the answer changes; cannot locate the response.")
    pos = len(pieces[0])
    for k, i in enumerate(idx):
        content = messages[i]["content"]
        after = pieces[k + 1]
        found = None
        for cand in dict.fromkeys([content, content.strip(), content.lstrip("\n"),
                                   content.rstrip(), content.strip("\n")]):
            if text.startswith(cand, pos) and text.startswith(after, pos + len(cand)):
                found = cand
                break
        if found is None:
            # Content transformed by the template in a way we cannot predict: take what lies
            # between the surrounding template pieces.
            end = text.find(after, pos) if after else len(text)
            if end < 0:
                raise MaskingError(
                    f"Could not find assistant message {k} of the conversation in the rendered "
                    "text. Does the template rewrite assistant content (for example split off "
                    "<think> reasoning)? Pass reasoning in its own field instead.")
            found = text[pos:end]
        spans.append((pos, pos + len(found)))
        pos += len(found) + len(after)
    return text, spans


def tokenize_for_training(tokenizer, messages: Sequence[dict], **template_kwargs) -> dict[str, list[int]]:
    """Token ids and labels for one conversation.

    Labels are -100 everywhere except the content of every assistant turn and the end-of-turn
    token that closes it. System and user text, role headers, empty think blocks and padding
    are never trained.
    """
    text, spans = assistant_spans(tokenizer, messages, **template_kwargs)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(enc["input_ids"])
    offsets = enc["offset_mapping"]
    labels = [IGNORE_INDEX] * len(input_ids)
    special = _special_ids(tokenizer)
    for start, end in spans:
        last = None
        for t, (a, b) in enumerate(offsets):
            if b <= a:
                continue
            if a < end and b > start:  # overlaps the content (a token may straddle its edge)
                labels[t] = input_ids[t]
                last = t
            elif a >= end:
                # the first token after the content closes the turn when it is a special token
                if input_ids[t] in special and (last is not None or start == end):
                    labels[t] = input_ids[t]
                break
    return {"input_ids": input_ids, "labels": labels}


def _special_ids(tokenizer) -> set[int]:
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    for tok_id, added in getattr(tokenizer, "added_tokens_decoder", {}).items():
        if getattr(added, "special", False):
            ids.add(int(tok_id))
    return ids


def response_markers(tokenizer, **template_kwargs) -> tuple[str, str]:
    """``(instruction_part, response_part)``: the header that opens a user turn and the one that
    opens an assistant turn, as detected from the template (for code that wants markers, such as
    Unsloth's ``train_on_responses_only``)."""
    u, a = "\u2063U{}\u2063", "\u2063A{}\u2063"
    conv = [{"role": "user", "content": u.format(0)}, {"role": "assistant", "content": a.format(0)},
            {"role": "user", "content": u.format(1)}, {"role": "assistant", "content": a.format(1)}]
    text = render(tokenizer, conv, **template_kwargs)

    def between(left: str, right: str) -> str:
        i = text.index(left) + len(left)
        return text[i:text.index(right, i)]

    user_to_asst = [between(u.format(0), a.format(0)), between(u.format(1), a.format(1))]
    asst_to_user = between(a.format(0), u.format(1))
    response = _header(tokenizer, user_to_asst[0], asst_to_user)
    response_last = _header(tokenizer, user_to_asst[1], asst_to_user)
    # Earlier and last assistant headers may differ (Qwen3's think block): keep what they share.
    common = 0
    while common < min(len(response), len(response_last)) and response[common] == response_last[common]:
        common += 1
    instruction = _header(tokenizer, asst_to_user, user_to_asst[0])
    return instruction, response[:common]


def _header(tokenizer, segment: str, other: str) -> str:
    """The part of ``segment`` that opens the next turn: drop the shared closing part (the
    end-of-turn token and separators) that ``segment`` has in common with ``other``, backing
    up to the special token that starts the header."""
    enc = tokenizer(segment, add_special_tokens=False, return_offsets_mapping=True)
    other_ids = tokenizer(other, add_special_tokens=False)["input_ids"]
    ids = enc["input_ids"]
    diff = 0
    while diff < min(len(ids), len(other_ids)) and ids[diff] == other_ids[diff]:
        diff += 1
    special = _special_ids(tokenizer)
    start = diff
    for t in range(min(diff, len(ids) - 1), -1, -1):
        if ids[t] in special:
            start = t
            break
    return segment[enc["offset_mapping"][start][0]:] if ids else segment


@dataclass
class MaskReport:
    model: str
    examples: int
    tokens: int
    trained_tokens: int
    min_trained: int
    ends_with_closer: bool

    @property
    def trained_share(self) -> float:
        return self.trained_tokens / max(self.tokens, 1)

    def __str__(self) -> str:
        return (f"{self.examples} examples, {self.tokens} tokens, {self.trained_tokens} trained "
                f"({self.trained_share:.1%}); fewest trained tokens in one example: {self.min_trained}")


def check_masks(rows: Sequence[dict[str, list[int]]], *, model: str = "?", tokenizer=None) -> MaskReport:
    """The check before training: the share of trained tokens; raises, naming the model and the
    example's index, if any example trains no token at all."""
    total = trained = 0
    min_trained = None
    for i, row in enumerate(rows):
        n = sum(1 for x in row["labels"] if x != IGNORE_INDEX)
        if n == 0:
            raise MaskingError(
                f"Example {i} has no trained token for model {model}: every label is -100, so it "
                "would teach nothing. Its assistant turn may be empty, or cut off by "
                "max_seq_length (raise max_seq_length, or shorten the example).")
        total += len(row["labels"])
        trained += n
        min_trained = n if min_trained is None else min(min_trained, n)
    closer = True
    if tokenizer is not None and rows:
        last = [x for x in rows[0]["labels"] if x != IGNORE_INDEX][-1]
        closer = last in _special_ids(tokenizer)
        if not closer:
            log.warning("The last trained token of example 0 for %s is not an end-of-turn token: "
                        "the model may not learn to stop.", model)
    report = MaskReport(model, len(rows), total, trained, min_trained or 0, closer)
    log.info("Mask check for %s: %s", model, report)
    return report


def decode_trained(tokenizer, row: dict[str, list[int]]) -> str:
    """The trained part of one example as text, spans joined by ' | ' (for showing in notebooks)."""
    parts, cur = [], []
    for tok, lab in zip(row["input_ids"], row["labels"]):
        if lab != IGNORE_INDEX:
            cur.append(tok)
        elif cur:
            parts.append(tokenizer.decode(cur))
            cur = []
    if cur:
        parts.append(tokenizer.decode(cur))
    return " | ".join(parts)


def tokenize_dataset(tokenizer, conversations: Iterable[Sequence[dict]], *, max_seq_length: int,
                     model: str = "?", **template_kwargs) -> tuple[list[dict], dict[str, Any]]:
    """Tokenize conversations for training, truncating to ``max_seq_length`` and counting what
    was truncated (never dropping it silently). Returns ``(rows, stats)``."""
    rows, truncated = [], 0
    for conv in conversations:
        row = tokenize_for_training(tokenizer, conv, **template_kwargs)
        if len(row["input_ids"]) > max_seq_length:
            truncated += 1
            row = {k: v[:max_seq_length] for k, v in row.items()}
        rows.append(row)
    if truncated:
        log.warning("%d of %d examples are longer than max_seq_length=%d and were truncated; raise "
                    "max_seq_length to keep their ends.", truncated, len(rows), max_seq_length)
    report = check_masks(rows, model=model, tokenizer=tokenizer)
    stats = {"examples": len(rows), "truncated": truncated, "tokens": report.tokens,
             "trained_tokens": report.trained_tokens,
             "trained_share": round(report.trained_share, 4),
             "max_tokens": max((len(r["input_ids"]) for r in rows), default=0)}
    return rows, stats
