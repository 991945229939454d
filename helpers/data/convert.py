"""Code and chat logs to training JSONL: chat-log exports, local ``datasets`` files and
fill-in-the-middle examples from a code repository, each deduplicated and split the way the book
recipes are.

Sources: :func:`helpers.data.chatlogs.load_export` (Claude.ai, ChatGPT), :func:`from_datasets_file`
(parquet/JSON/JSONL/CSV through the ``datasets`` library) and :mod:`helpers.data.fim`.
:func:`finish` then drops exact duplicates (identical records), normalised-text duplicates
(``recipes.dedupe``: same words after normalising case, spaces and punctuation; near duplicates
only when ``near`` is set) and later conversations whose prompt repeats an earlier one (which
``data.load`` refuses), and holds out about ``validation`` of the examples with
``recipes.heldout_split``: whole groups, seeded (a FIM example's group is its file, so no
validation file was seen in training; a conversation or a row is its own group). It writes
``<out>`` (train), ``<out stem>.validation.jsonl`` and ``<out stem>.report.json``.

Command line::

    python -m helpers.data.convert chatgpt conversations.json --out data/chats.jsonl
    python -m helpers.data.convert claude conversations.json --out data/chats.jsonl --min-turns 2
    python -m helpers.data.convert datasets train.parquet --prompt-field instruction \\
        --completion-field output --out data/alpaca.jsonl
    python -m helpers.data.convert fim path/to/repo --model qwen2.5-3b --out data/fim.jsonl
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from helpers import models
from helpers.books.passage import Passage
from helpers.data import chatlogs, fim, recipes

log = logging.getLogger(__name__)

DATASET_KINDS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv"}


class ConvertError(ValueError):
    """A conversion could not be done as asked; the message names the setting and the fix."""


def _role(value: Any) -> str | None:
    return recipes._ROLE_ALIASES.get(str(value).lower())


def from_datasets_file(path: str | os.PathLike, *, prompt_field: str | None = None,
                       completion_field: str | None = None, messages_field: str | None = None,
                       input_field: str | None = None) -> tuple[list[list[dict]], dict[str, Any]]:
    """Conversations from a local parquet/JSON/JSONL/CSV file read with ``datasets``: a messages
    column (``messages_field``, default ``messages``; ``{role, content}`` or ShareGPT ``{from,
    value}`` turns; tool turns left out) or prompt/completion columns (default ``prompt`` and
    ``completion``; ``input_field`` is appended to the prompt, as in Alpaca's ``input``)."""
    from datasets import load_dataset
    path = Path(path)
    kind = DATASET_KINDS.get(path.suffix.lower())
    if not path.is_file() or kind is None:
        raise ConvertError(f"{path}: expected an existing file ending in "
                           f"{', '.join(DATASET_KINDS)} (a local `datasets` file).")
    ds = load_dataset(kind, data_files=str(path), split="train")
    cols = list(ds.column_names)
    use_messages = messages_field is not None or (
        "messages" in cols and prompt_field is None and completion_field is None)
    wanted = [messages_field or "messages"] if use_messages else \
        [prompt_field or "prompt", completion_field or "completion"] + ([input_field] if input_field else [])
    missing = [c for c in wanted if c not in cols]
    if missing:
        raise ConvertError(
            f"{path}: no column {', '.join(map(repr, missing))}; its columns are "
            f"{', '.join(cols)}. Name the columns with prompt_field/completion_field "
            "(--prompt-field/--completion-field) or messages_field (--messages-field).")
    convs, skipped = [], 0
    for row in ds:
        conv = _row_messages(row[wanted[0]]) if use_messages else _row_pair(row, *wanted)
        if conv is None:
            skipped += 1
        else:
            convs.append(conv)
    report = {"rows": len(ds), "kept": len(convs), "left_out": {"empty or no answer": skipped}
              if skipped else {}, "columns": wanted}
    log.info("datasets file %s: %s", path, report)
    return convs, report


def _row_pair(row: dict, p: str, c: str, i: str | None = None) -> list[dict] | None:
    prompt, completion = row.get(p), row.get(c)
    extra = row.get(i) if i else None
    if isinstance(extra, str) and extra.strip():
        prompt = f"{prompt}\n\n{extra}"
    if not (isinstance(prompt, str) and prompt.strip() and isinstance(completion, str)
            and completion.strip()):
        return None
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]


def _row_messages(turns: Any) -> list[dict] | None:
    conv = []
    for t in turns or []:
        if not isinstance(t, dict):
            return None
        role = _role(t.get("role", t.get("from", "")))
        text = t.get("content", t.get("value"))
        if role is None or not isinstance(text, str) or not text.strip():
            continue
        conv.append({"role": role, "content": text})
    return conv if any(m["role"] == "assistant" for m in conv) else None


@dataclass
class Converted:
    train: Path
    validation: Path
    report: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        r = self.report
        d = r["duplicates"]
        return (f"{r['input']} examples in; dropped {d['exact']} exact, {d['normalised']} "
                f"normalised-text, {d['near']} near and {d['same_prompt']} same-prompt "
                f"duplicates; train {r['train']} -> {self.train}, validation "
                f"{r['validation']} -> {self.validation}")


def _key(rec: dict) -> list[dict]:
    if "messages" in rec:
        return rec["messages"]
    return [{"role": "user", "content": rec["raw_prompt"]},
            {"role": "assistant", "content": rec["raw_completion"]}]


def finish(records: Sequence[dict], out: str | os.PathLike, *, validation: float = 0.1,
           seed: int = 0, near: float | None = None, source: dict | None = None) -> Converted:
    """Deduplicate ``records`` (``{"messages": [...]}`` or raw FIM records, each with an optional
    ``source`` naming its group), split them and write the train/validation files and report."""
    if not records:
        raise ConvertError("No examples to write: every conversation/row/file was left out "
                           f"({json.dumps((source or {}).get('left_out', {}))}). Loosen the "
                           "filters (min_turns, drop_attachments, extensions) or check the input.")
    seen, unique = set(), []
    for rec in records:
        k = json.dumps(rec, sort_keys=True, ensure_ascii=False)
        if k not in seen:
            seen.add(k)
            unique.append(rec)
    keys = [_key(r) for r in unique]
    by_id = {id(k): r for k, r in zip(keys, unique)}
    kept_convs, stats = recipes.dedupe(keys, near=near)
    kept, prompts, same_prompt = [], set(), 0
    for conv in kept_convs:
        rec = by_id[id(conv)]
        p = json.dumps([m for m in conv if m["role"] != "assistant"], sort_keys=True)
        if "messages" in rec and p in prompts:
            same_prompt += 1
            continue
        prompts.add(p)
        kept.append(rec)
    passages = [Passage(text="\n".join(m["content"] for m in _key(r)), book=str(r.get("source", i)),
                        chapter=str(r.get("source", i)), first_page=i + 1, last_page=i + 1, index=i)
                for i, r in enumerate(kept)]
    held: set[int] = set()
    if validation and len(passages) > 1:
        held = {p.index for p in recipes.heldout_split(passages, validation, seed).heldout}
    train = [r for i, r in enumerate(kept) if i not in held]
    valid = [r for i, r in enumerate(kept) if i in held]
    if validation and not valid:
        log.warning("No validation examples: one group only (%s); all %d go to training",
                    passages[0].book, len(train))
    out = Path(out)
    stem = out.with_suffix("") if out.suffix == ".jsonl" else out
    paths = {"train": out, "validation": Path(f"{stem}.validation.jsonl")}
    for name, rows in (("train", train), ("validation", valid)):
        paths[name].parent.mkdir(parents=True, exist_ok=True)
        paths[name].write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                               encoding="utf-8")
    report = {"source": source or {}, "input": len(records),
              "duplicates": {"exact": len(records) - len(unique),
                             "normalised": stats["exact_duplicates"],
                             "near": stats["near_duplicates"], "same_prompt": same_prompt},
              "kept": len(kept), "train": len(train), "validation": len(valid),
              "validation_fraction": validation, "seed": seed,
              "format": "raw_fim" if kept and "raw_prompt" in kept[0] else "messages"}
    Path(f"{stem}.report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
    done = Converted(paths["train"], paths["validation"], report)
    log.info("%s", done.summary())
    return done


def _with_system(convs: Sequence[list[dict]], system_prompt: str | None) -> list[dict]:
    sys_msg = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [{"messages": sys_msg + [m for m in c if not (sys_msg and m["role"] == "system")]}
            for c in convs]


def convert_chat_export(path: str | os.PathLike, out: str | os.PathLike, *, fmt: str = "auto",
                        min_turns: int = 1, drop_attachments: bool = False,
                        system_prompt: str | None = None, **split) -> Converted:
    """A Claude.ai or ChatGPT ``conversations.json`` to train/validation chat JSONL."""
    convs, report = chatlogs.load_export(path, fmt, min_turns=min_turns,
                                         drop_attachments=drop_attachments)
    return finish(_with_system(convs, system_prompt), out, source=report, **split)


def convert_datasets_file(path: str | os.PathLike, out: str | os.PathLike, *,
                          system_prompt: str | None = None, prompt_field: str | None = None,
                          completion_field: str | None = None, messages_field: str | None = None,
                          input_field: str | None = None, **split) -> Converted:
    """A local parquet/JSON/JSONL/CSV file to train/validation chat JSONL."""
    convs, report = from_datasets_file(path, prompt_field=prompt_field,
                                       completion_field=completion_field,
                                       messages_field=messages_field, input_field=input_field)
    return finish(_with_system(convs, system_prompt), out, source=report, **split)


def fim_style(style: str = "auto", *, model: str | None = None, tokenizer=None) -> fim.FimTokens | None:
    """The FIM tokens to render with (``None``: the chat fallback). ``style`` is ``auto`` (the
    tokenizer's FIM tokens when it has them, else the model family's), ``fim`` (required) or
    ``chat``."""
    if style not in ("auto", "fim", "chat"):
        raise ConvertError(f"style={style!r}: use auto, fim (the family's FIM tokens) or chat.")
    if style == "chat":
        return None
    if tokenizer is not None:
        tokens, whose = fim.fim_tokens(tokenizer), getattr(tokenizer, "name_or_path", "the tokenizer")
    elif model is not None:
        family = models.get_profile(model).family
        tokens, whose = fim.tokens_for_family(family), f"{model} (family {family})"
    else:
        tokens, whose = None, "no model or tokenizer given"
    if style == "fim" and tokens is None:
        raise ConvertError(f"style='fim' but {whose} has no FIM tokens ({', '.join(fim.QWEN_FIM.strings())}). "
                           "Use style='chat' (or 'auto'), or a Qwen2.5/Qwen3 model.")
    return tokens


def convert_repo(repo: str | os.PathLike, out: str | os.PathLike, *, tokens: fim.FimTokens | None,
                 repo_name: str | None = None, system_prompt: str | None = None,
                 validation: float = 0.1, seed: int = 0, near: float | None = None,
                 **cut) -> Converted:
    """FIM examples from a code repository to train/validation JSONL (raw FIM records with
    ``tokens``, else chat examples); ``cut`` goes to :func:`helpers.data.fim.examples`."""
    exs, report = fim.examples(repo, seed=seed, **cut)
    name = repo_name if repo_name is not None else Path(repo).resolve().name
    recs = [fim.to_record(e, tokens, repo_name=name, system_prompt=system_prompt) for e in exs]
    report = {**report, "style": "fim" if tokens else "chat"}
    return finish(recs, out, validation=validation, seed=seed, near=near, source=report)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m helpers.data.convert", description=__doc__.split("\n\n")[0])
    ap.add_argument("source", choices=("chatgpt", "claude", "datasets", "fim"))
    ap.add_argument("path", help="conversations.json, a parquet/JSON/JSONL/CSV file, or a repository folder")
    ap.add_argument("--out", required=True, help="train JSONL; validation and report go beside it")
    ap.add_argument("--validation", type=float, default=0.1, help="share held out (0 for none)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--near", type=float, default=None, help="also drop near duplicates (e.g. 0.85)")
    ap.add_argument("--system-prompt", default=None)
    ap.add_argument("--min-turns", type=int, default=1, help="chat logs: answered user turns needed")
    ap.add_argument("--drop-attachments", action="store_true", help="chat logs: skip conversations with files")
    for f in ("prompt", "completion", "messages", "input"):
        ap.add_argument(f"--{f}-field", default=None, help=f"datasets: the {f} column")
    ap.add_argument("--model", default=None, help="fim: the model to train (its family's FIM tokens)")
    ap.add_argument("--tokenizer", default=None, help="fim: a tokenizer folder to read FIM tokens from")
    ap.add_argument("--style", default="auto", choices=("auto", "fim", "chat"))
    ap.add_argument("--per-file", type=int, default=2, help="fim: examples per file")
    ap.add_argument("--unit", default="line", choices=fim.UNITS)
    ap.add_argument("--max-middle", type=int, default=8, help="fim: most lines/tokens in a middle")
    ap.add_argument("--max-context", type=int, default=2000, help="fim: most characters of prefix and of suffix")
    ap.add_argument("--extensions", default=",".join(fim.DEFAULT_EXTENSIONS))
    ap.add_argument("--repo-name", default=None)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    split = dict(validation=a.validation, seed=a.seed, near=a.near)
    try:
        if a.source in ("chatgpt", "claude"):
            done = convert_chat_export(a.path, a.out, fmt=a.source, min_turns=a.min_turns,
                                       drop_attachments=a.drop_attachments,
                                       system_prompt=a.system_prompt, **split)
        elif a.source == "datasets":
            done = convert_datasets_file(a.path, a.out, system_prompt=a.system_prompt,
                                         prompt_field=a.prompt_field, completion_field=a.completion_field,
                                         messages_field=a.messages_field, input_field=a.input_field, **split)
        else:
            tok = None
            if a.tokenizer:
                from transformers import AutoTokenizer
                tok = AutoTokenizer.from_pretrained(a.tokenizer)
            tokens = fim_style(a.style, model=a.model, tokenizer=tok)
            done = convert_repo(a.path, a.out, tokens=tokens, repo_name=a.repo_name,
                                system_prompt=a.system_prompt, n_per_file=a.per_file, unit=a.unit,
                                max_middle=a.max_middle, max_context=a.max_context,
                                extensions=[e for e in a.extensions.split(",") if e], **split)
    except (ConvertError, chatlogs.ChatLogError, fim.FimError, models.UnknownModelError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(done.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
