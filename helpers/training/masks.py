"""Chat rendering and response-only loss masks, found from the template's own output.

No marker strings are hard-coded per family. To find what to train, a conversation is rendered
twice: once as it is, and once with every assistant message's content (and reasoning) replaced
by unique sentinels. The text around the sentinels is what the template itself adds (role
headers, the empty Qwen3 think block, Harmony's channel headers); what sits between those pieces
in the real rendering is the assistant's text. The content and the first token after it (the
end-of-turn token, so the model learns to stop) get labels; everything else is -100.

Reasoning. An assistant message may carry its reasoning in a ``reasoning`` field (the one name
our data uses); it is handed to the template under every field name templates read it from
(Qwen3's ``reasoning_content``, GPT-OSS's ``thinking``), and the template decides where it goes
and which turns keep it (both drop it from turns before the last user message). A turn whose
reasoning is rendered is trained from where the model starts writing at inference (the end of
the generation prompt) to its closing token: the reasoning, the markup around it (Qwen3's
``<think>``/``</think>`` tags; Harmony's analysis channel, ``<|end|>`` and the final-channel
header), and the answer. The markup is trained because the model must write it itself when it
reasons. A turn without reasoning trains its content and closing token only, as before.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
_SENTINEL = "\u2063FT{}{}\u2063"  # invisible separator: never produced by a template
_SENTINEL_RE = re.compile("(\u2063FT[CR]\\d+\u2063)")

#: the field of an assistant message that holds its reasoning, in our data
REASONING_FIELD = "reasoning"
#: the fields chat templates read reasoning from: Qwen3 ``reasoning_content``, GPT-OSS ``thinking``
TEMPLATE_REASONING_FIELDS = ("reasoning_content", "thinking")


_REWRITE_HINT = ("Does the template rewrite assistant content (for example split off <think> "
                 f"reasoning)? Put reasoning in the message's {REASONING_FIELD!r} field instead of "
                 "the content.")


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


def reasoning_of(message: dict) -> str | None:
    """The reasoning of an assistant message (``None`` when it has none)."""
    value = message.get(REASONING_FIELD)
    ok = message.get("role") == "assistant" and isinstance(value, str) and value.strip()
    return value if ok else None


def for_template(messages: Sequence[dict]) -> list[dict]:
    """The messages as chat templates read them: an assistant message's ``reasoning`` is copied
    into each field a template may read (:data:`TEMPLATE_REASONING_FIELDS`)."""
    out = []
    for j, m in enumerate(messages):
        given = [f for f in TEMPLATE_REASONING_FIELDS if f in m]
        if given:
            raise MaskingError(
                f"Message {j} has the field {given[0]!r}. Put reasoning in the field "
                f"{REASONING_FIELD!r}; it is handed to each chat template under the name it reads.")
        m2 = {k: v for k, v in m.items() if k != REASONING_FIELD}
        reasoning = reasoning_of(m)
        if reasoning is not None:
            m2.update({f: reasoning for f in TEMPLATE_REASONING_FIELDS})
        out.append(m2)
    return out


def renders_reasoning(tokenizer, **template_kwargs) -> bool:
    """Whether the chat template renders the reasoning of a final assistant turn at all."""
    sentinel = _SENTINEL.format("R", 0)
    probe = for_template([{"role": "user", "content": "?"},
                          {"role": "assistant", "content": "!", REASONING_FIELD: sentinel}])
    return sentinel in render(tokenizer, probe, **template_kwargs)


def with_thinking(tokenizer, template_kwargs: dict, thinking: bool | None) -> dict:
    """``template_kwargs`` with thinking switched on or off for a run (``None``: as they are).
    Templates with a thinking switch (Qwen3's ``enable_thinking``) get it set; GPT-OSS always
    reasons; a template that renders no reasoning (Qwen2.5) cannot think and raises."""
    kwargs = dict(template_kwargs)
    if thinking is None:
        return kwargs
    if "enable_thinking" in (getattr(tokenizer, "chat_template", None) or ""):
        kwargs["enable_thinking"] = bool(thinking)
    elif thinking and not renders_reasoning(tokenizer, **kwargs):
        raise MaskingError(
            f"thinking=True, but the chat template of {getattr(tokenizer, 'name_or_path', '?')} has "
            "no reasoning (no think blocks, no analysis channel). Leave thinking unset for this "
            "model, or train a model that reasons (Qwen3, GPT-OSS).")
    return kwargs


@dataclass(frozen=True)
class TurnSpans:
    """Character ranges of one assistant turn in the rendered text."""

    content: tuple[int, int]
    reasoning: tuple[int, int] | None   # None: no reasoning, or the template dropped it
    trained: tuple[int, int]            # what gets labels (the closing token after it too)


def _sentinels(messages: Sequence[dict], idx: list[int]) -> list[dict]:
    marked = [dict(m) for m in messages]
    for k, i in enumerate(idx):
        marked[i]["content"] = _SENTINEL.format("C", k)
        if reasoning_of(messages[i]) is not None:
            marked[i][REASONING_FIELD] = _SENTINEL.format("R", k)
    return marked


def locate(tokenizer, messages: Sequence[dict], **template_kwargs) -> tuple[str, list[TurnSpans]]:
    """Render ``messages`` and find, for each assistant message in order, its content, its
    reasoning (if the template renders it) and the range to train."""
    prepared = for_template(messages)
    text = render(tokenizer, prepared, **template_kwargs)
    idx = _assistant_indices(messages)
    if not idx:
        return text, []
    skeleton = render(tokenizer, for_template(_sentinels(messages, idx)), **template_kwargs)
    parts = _SENTINEL_RE.split(skeleton)   # piece, sentinel, piece, sentinel, ..., piece
    name = getattr(tokenizer, "name_or_path", "?")
    seen = parts[1::2]
    for k in range(len(idx)):
        for kind, what in (("C", "assistant message"), ("R", "the reasoning of assistant message")):
            n = seen.count(_SENTINEL.format(kind, k))
            if n > 1 or (kind == "C" and n != 1):
                raise MaskingError(
                    f"The chat template of {name} rendered {what} {k} {n} times; expected once. "
                    "Response masks cannot be found for this template.")
    if not text.startswith(parts[0]):
        raise MaskingError("The template renders the text before the first answer differently "
                           f"when the answer changes; cannot locate the response. {_REWRITE_HINT}")
    found: dict[str, tuple[int, int]] = {}
    pos = len(parts[0])
    for j in range(1, len(parts), 2):
        sentinel, after = parts[j], parts[j + 1]
        kind, k = sentinel[3], int(sentinel[4:-1])
        m = messages[idx[k]]
        value = m["content"] if kind == "C" else reasoning_of(m)
        span = None
        for cand in dict.fromkeys([value, value.strip(), value.lstrip("\n"), value.rstrip(),
                                   value.strip("\n")]):
            if text.startswith(cand, pos) and text.startswith(after, pos + len(cand)):
                span = (pos, pos + len(cand))
                break
        if span is None:
            # Text transformed by the template in a way we cannot predict: take what lies
            # between the surrounding template pieces.
            end = text.find(after, pos) if after else len(text)
            if end < 0:
                raise MaskingError(
                    f"Could not find assistant message {k} of the conversation in the rendered "
                    f"text. {_REWRITE_HINT}")
            span = (pos, end)
        found[sentinel] = span
        pos = span[1] + len(after)

    turns, floor, supported = [], 0, None
    for k, i in enumerate(idx):
        content = found[_SENTINEL.format("C", k)]
        reasoning = found.get(_SENTINEL.format("R", k))
        if reasoning is None and reasoning_of(messages[i]) is not None:
            supported = renders_reasoning(tokenizer, **template_kwargs) if supported is None else supported
            if not supported:
                raise MaskingError(
                    f"Assistant message {k} has a {REASONING_FIELD!r} field, but the chat template "
                    f"of {name} does not render reasoning, so it cannot be trained. Remove the "
                    f"{REASONING_FIELD!r} field from the data (or write the reasoning into the "
                    "answer), or train a model whose template has reasoning (Qwen3, GPT-OSS).")
            log.debug("The template drops the reasoning of assistant message %d (an earlier turn)", k)
        start = content[0]
        if reasoning is not None:
            start = _writing_starts(tokenizer, prepared[:i], text, floor, reasoning[0], k,
                                    template_kwargs)
        turns.append(TurnSpans(content=content, reasoning=reasoning, trained=(start, content[1])))
        floor = content[1]
    return text, turns


def _writing_starts(tokenizer, before: Sequence[dict], text: str, floor: int, reasoning_start: int,
                    k: int, template_kwargs: dict) -> int:
    """Where the model starts writing a turn that reasons: the end of the generation prompt for
    the conversation up to that turn. Raises when the generation prompt pre-fills text that the
    turn does not have (Qwen3 with thinking off pre-fills an empty think block, so the model
    would never write the reasoning it is trained on)."""
    prompt = render(tokenizer, before, add_generation_prompt=True, **template_kwargs)
    common = len(os.path.commonprefix([prompt, text]))
    if common == len(prompt) and floor <= common <= reasoning_start:
        return common
    if common < len(prompt) and common > floor:
        raise MaskingError(
            f"Assistant message {k} has reasoning, but with the template settings "
            f"{template_kwargs} the generation prompt ends with {prompt[-40:]!r}: it pre-fills "
            f"{prompt[common:]!r} where this turn has its reasoning, so at inference the model "
            "would never write the reasoning it is trained on. Turn thinking on (template setting "
            "enable_thinking=True; `--thinking` on the command line, thinking=True in "
            f"FineTuneRun.start), or remove the {REASONING_FIELD!r} field from the data.")
    # the conversation before this turn renders differently without it (consecutive assistant
    # turns): train from the reasoning itself
    return reasoning_start


def assistant_spans(tokenizer, messages: Sequence[dict], **template_kwargs) -> tuple[str, list[tuple[int, int]]]:
    """Render ``messages`` and return ``(text, spans)``: the character span of each assistant
    message's content in ``text``, in order."""
    text, turns = locate(tokenizer, messages, **template_kwargs)
    return text, [t.content for t in turns]


def tokenize_for_training(tokenizer, messages: Sequence[dict], **template_kwargs) -> dict[str, list[int]]:
    """Token ids and labels for one conversation.

    Labels are -100 everywhere except the content of every assistant turn and the end-of-turn
    token that closes it, and, in a turn whose reasoning the template renders, everything the
    model writes from the end of the generation prompt on (see the module docstring). System and
    user text, role headers, empty think blocks and padding are never trained.
    """
    text, turns = locate(tokenizer, messages, **template_kwargs)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    input_ids = list(enc["input_ids"])
    offsets = enc["offset_mapping"]
    labels = [IGNORE_INDEX] * len(input_ids)
    special = _special_ids(tokenizer)
    for turn in turns:
        start, end = turn.trained
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


def source_sha256(tokenizer, conversation: Sequence[dict], max_seq_length: int,
                  template_kwargs: dict[str, Any]) -> str:
    """A hash of what a training row is made from, stable from day to day: the conversation as
    given (before rendering), the template settings, the chat template's source text, the
    tokenizer (its name and size) and the truncation length. Not the rendered tokens, which
    change with the date for templates that print it (GPT-OSS's ``strftime_now``)."""
    import hashlib
    import json
    source = {"conversation": list(conversation), "template_kwargs": template_kwargs,
              "chat_template": getattr(tokenizer, "chat_template", None),
              "tokenizer": [getattr(tokenizer, "name_or_path", None), len(tokenizer)],
              "max_seq_length": max_seq_length}
    text = json.dumps(source, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def tokenize_dataset(tokenizer, conversations: Iterable[Sequence[dict]], *, max_seq_length: int,
                     model: str = "?", **template_kwargs) -> tuple[list[dict], dict[str, Any]]:
    """Tokenize conversations for training, truncating to ``max_seq_length`` and counting what
    was truncated (never dropping it silently). Returns ``(rows, stats)``.

    Each row also carries ``source_sha256`` (:func:`source_sha256`): a hash of what it was made
    from, for deciding whether a run may resume (``train._fingerprint``). The token ids cannot
    serve: GPT-OSS's template renders today's date, so the same data tokenizes differently on
    another day."""
    rows, truncated = [], 0
    for i, conv in enumerate(conversations):
        try:
            row = tokenize_for_training(tokenizer, conv, **template_kwargs)
        except MaskingError as e:
            raise MaskingError(f"Example {i} for model {model}: {e}") from e
        if len(row["input_ids"]) > max_seq_length:
            truncated += 1
            row = {k: v[:max_seq_length] for k, v in row.items()}
        row["source_sha256"] = source_sha256(tokenizer, conv, max_seq_length, template_kwargs)
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


def tokenize_raw(tokenizer, prompt: str, completion: str, *,
                 special_tokens: Sequence[str] = ()) -> dict[str, list[int]]:
    """Token ids and labels for a raw-text example, no chat template (fill-in-the-middle records
    from :mod:`helpers.data.fim`): the prompt and the completion are tokenized apart and joined,
    and only the completion's tokens are labelled. Each of ``special_tokens`` (the FIM tokens the
    record was made with) must be one token of this tokenizer."""
    name = getattr(tokenizer, "name_or_path", "?")
    vocab = tokenizer.get_vocab()
    for t in special_tokens:
        if t not in vocab or tokenizer(t, add_special_tokens=False)["input_ids"] != [vocab[t]]:
            raise MaskingError(
                f"The tokenizer of {name} has no single token {t!r}, which this raw example was "
                "made with: it was made for another model family. Rebuild the examples for this "
                "model (`python -m helpers.data.convert fim REPO --model <this model>`), which "
                "falls back to chat examples where the tokenizer has no FIM tokens.")
    p_ids = list(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    c_ids = list(tokenizer(completion, add_special_tokens=False)["input_ids"])
    return {"input_ids": p_ids + c_ids, "labels": [IGNORE_INDEX] * len(p_ids) + c_ids}


def tokenize_raw_dataset(tokenizer, records: Iterable[dict], *, max_seq_length: int,
                         model: str = "?") -> tuple[list[dict], dict[str, Any]]:
    """:func:`tokenize_raw` over ``{"raw_prompt", "raw_completion", "special_tokens"}`` records,
    truncated to ``max_seq_length`` (counted) and checked by :func:`check_masks`."""
    rows, truncated = [], 0
    for i, rec in enumerate(records):
        try:
            row = tokenize_raw(tokenizer, rec["raw_prompt"], rec["raw_completion"],
                               special_tokens=rec.get("special_tokens", ()))
        except MaskingError as e:
            raise MaskingError(f"Example {i} for model {model}: {e}") from e
        if len(row["input_ids"]) > max_seq_length:
            truncated += 1
            row = {k: v[:max_seq_length] for k, v in row.items()}
        rows.append(row)
    report = check_masks(rows, model=model, tokenizer=tokenizer)
    return rows, {"examples": len(rows), "truncated": truncated, "tokens": report.tokens,
                  "trained_tokens": report.trained_tokens,
                  "trained_share": round(report.trained_share, 4),
                  "max_tokens": max((len(r["input_ids"]) for r in rows), default=0)}


def tokenize_examples(tokenizer, conversations: Sequence[list[dict]], *, raw: Sequence[dict] = (),
                      max_seq_length: int, model: str = "?",
                      **template_kwargs) -> tuple[list[dict], dict[str, Any]]:
    """A run's training rows: raw-text records (:func:`tokenize_raw_dataset`, no chat template)
    followed by chat ``conversations`` (:func:`tokenize_dataset`; e.g. replayed general answers
    beside raw code), with their statistics added up."""
    parts = []
    if raw:
        parts.append(tokenize_raw_dataset(tokenizer, raw, max_seq_length=max_seq_length, model=model))
    if conversations or not raw:
        parts.append(tokenize_dataset(tokenizer, conversations, max_seq_length=max_seq_length,
                                      model=model, **template_kwargs))
    rows = [row for part, _ in parts for row in part]
    stats = {k: sum(st[k] for _, st in parts) for k in ("examples", "truncated", "tokens", "trained_tokens")}
    stats["trained_share"] = round(stats["trained_tokens"] / max(1, stats["tokens"]), 4)
    stats["max_tokens"] = max(st["max_tokens"] for _, st in parts)
    return rows, stats
