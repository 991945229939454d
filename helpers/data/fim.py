"""Fill-in-the-middle (FIM) examples cut from a code repository.

Steps: :func:`code_files` walks a folder (skipping ``.git`` and other hidden folders, vendored
and build folders, names matched by the root ``.gitignore``'s plain patterns, binary files and
files over ``max_bytes``) and keeps files with one of ``extensions``. :func:`cut` cuts a file's
text into :class:`FimExample` pieces: a middle of 1..``max_middle`` lines (or word/space/symbol
tokens with ``unit="token"``) at a seeded random place, and up to ``max_context`` characters of
prefix before it and suffix after it, cut at the same kind of boundary, so that
``prefix + middle + suffix`` is exactly ``text[start:end]``. Each file's random generator is
seeded from ``seed`` and its path, so adding a file never changes another file's cuts.

Two renderings (:func:`to_record`):

- with the family's FIM tokens (:data:`QWEN_FIM`: Qwen2.5, Qwen2.5-Coder and Qwen3 tokenizers
  hold ``<|fim_prefix|>`` 151659, ``<|fim_middle|>`` 151660, ``<|fim_suffix|>`` 151661,
  ``<|repo_name|>`` 151663, ``<|file_sep|>`` 151664), a raw-text record in Qwen2.5-Coder's
  repository-level PSM order, trained without a chat template::

      {"raw_prompt": "<|repo_name|>{repo}\\n<|file_sep|>{path}\\n<|fim_prefix|>{prefix}"
                     "<|fim_suffix|>{suffix}<|fim_middle|>",
       "raw_completion": "{middle}<|endoftext|>", "special_tokens": [...]}

  (:func:`helpers.training.masks.tokenize_raw` labels only the completion: the middle and the
  ``<|endoftext|>`` that ends it);
- without them (GPT-OSS, or any tokenizer lacking one of the tokens), a chat example: the user
  asks for the code at the ``<FILL_HERE>`` gap of the file shown (:func:`chat_prompt`) and the
  assistant answers the middle verbatim, so the usual response masks train only the middle.

Files that contain a control-token string (``<|fim_prefix|>``, ``<|im_end|>``, ...) are skipped:
a tokenizer reads those as control tokens wherever they appear.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

log = logging.getLogger(__name__)

DEFAULT_EXTENSIONS = (".py", ".js", ".ts", ".tsx", ".jsx", ".java", ".c", ".h", ".cc", ".cpp",
                      ".hpp", ".rs", ".go", ".rb", ".php", ".cs", ".kt", ".swift", ".scala",
                      ".sh", ".sql", ".lua", ".r", ".jl", ".m", ".hs", ".ml", ".toml", ".yaml",
                      ".yml")
#: folders never read (hidden folders, starting with ".", are skipped too)
SKIP_DIRS = frozenset({"node_modules", "venv", "env", "vendor", "third_party", "site-packages",
                       "__pycache__", "build", "dist", "target", "out"})
UNITS = ("line", "token")
_TOKEN_RE = re.compile(r"\w+|\s+|[^\w\s]+")
FILL = "<FILL_HERE>"


class FimError(ValueError):
    """A repository or setting gives no FIM examples; the message names the setting to change."""


@dataclass(frozen=True)
class FimTokens:
    prefix: str = "<|fim_prefix|>"
    suffix: str = "<|fim_suffix|>"
    middle: str = "<|fim_middle|>"
    repo_name: str | None = "<|repo_name|>"
    file_sep: str | None = "<|file_sep|>"
    end: str = "<|endoftext|>"   # what ends the middle (Qwen2.5-Coder's FIM training)

    def strings(self) -> list[str]:
        return [t for t in (self.prefix, self.suffix, self.middle, self.repo_name,
                            self.file_sep, self.end) if t]


QWEN_FIM = FimTokens()
#: families whose tokenizers hold FIM tokens (checked against the real Qwen2.5-Coder vocabulary)
FAMILY_FIM: dict[str, FimTokens] = {"qwen2.5": QWEN_FIM, "qwen3": QWEN_FIM}
#: strings that a Qwen tokenizer (or a chat template) reads as control tokens
_CONTROL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|fim_prefix|>", "<|fim_suffix|>",
            "<|fim_middle|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<|start|>",
            "<|end|>", "<|message|>", "<|channel|>", "<|return|>")


@dataclass(frozen=True)
class FimExample:
    path: str      # relative to the repository, with "/"
    prefix: str
    middle: str
    suffix: str
    start: int     # character offsets of prefix + middle + suffix in the file's text
    end: int

    @property
    def region(self) -> str:
        return self.prefix + self.middle + self.suffix


def fim_tokens(tokenizer, tokens: FimTokens = QWEN_FIM) -> FimTokens | None:
    """``tokens`` when ``tokenizer`` encodes each of its strings as one token, else ``None``."""
    vocab = tokenizer.get_vocab()
    for t in tokens.strings():
        if t not in vocab or tokenizer(t, add_special_tokens=False)["input_ids"] != [vocab[t]]:
            return None
    return tokens


def tokens_for_family(family: str) -> FimTokens | None:
    return FAMILY_FIM.get(family)


def _gitignore(repo: Path) -> list[str]:
    f = repo / ".gitignore"
    if not f.is_file():
        return []
    lines = [ln.strip() for ln in f.read_text(encoding="utf-8", errors="replace").splitlines()]
    return [ln.rstrip("/") for ln in lines if ln and not ln.startswith(("#", "!"))]


def _ignored(rel: str, name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(rel, p.lstrip("/")) for p in patterns)


def code_files(repo: str | os.PathLike, extensions: Iterable[str] = DEFAULT_EXTENSIONS, *,
               max_bytes: int = 200_000) -> tuple[list[Path], list[tuple[str, str]]]:
    """``(files, skipped)``: the code files under ``repo`` (sorted, absolute) and the files left
    out with the reason (binary, too big, not UTF-8, control tokens)."""
    repo = Path(repo)
    if not repo.is_dir():
        raise FimError(f"Repository folder not found: {repo} (absolute: {repo.resolve()}). "
                       "Pass the folder of a code repository.")
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    patterns = _gitignore(repo)
    files, skipped = [], []
    for root, dirs, names in os.walk(repo):
        rel_root = Path(root).relative_to(repo).as_posix()
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIP_DIRS
                         and not _ignored(f"{rel_root}/{d}".lstrip("./"), d, patterns))
        for name in sorted(names):
            p = Path(root) / name
            rel = p.relative_to(repo).as_posix()
            if p.suffix.lower() not in exts or _ignored(rel, name, patterns) or not p.is_file():
                continue
            reason = _unreadable(p, max_bytes)
            if reason:
                skipped.append((rel, reason))
            else:
                files.append(p)
    return files, skipped


def _unreadable(p: Path, max_bytes: int) -> str | None:
    size = p.stat().st_size
    if size > max_bytes:
        return f"{size} bytes, over max_bytes={max_bytes}"
    raw = p.read_bytes()
    if b"\0" in raw[:8192]:
        return "binary"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8"
    if not text.strip():
        return "empty"
    hit = next((c for c in _CONTROL if c in text), None)
    return f"contains the control-token string {hit}" if hit else None


def _pieces(text: str, unit: str) -> list[str]:
    if unit == "line":
        return text.splitlines(keepends=True)
    if unit == "token":
        return _TOKEN_RE.findall(text)
    raise FimError(f"unit={unit!r}: use one of {', '.join(UNITS)}")


def cut(text: str, rng: random.Random, *, path: str = "", n: int = 2, unit: str = "line",
        max_middle: int = 8, max_context: int = 2000) -> list[FimExample]:
    """Up to ``n`` distinct FIM examples from one file's ``text`` (fewer when the file is short
    or its middles would be blank)."""
    pieces = _pieces(text, unit)
    offsets = [0]
    for p in pieces:
        offsets.append(offsets[-1] + len(p))
    out: dict[tuple[int, int], FimExample] = {}
    for _ in range(4 * n):
        if len(out) >= n or not pieces:
            break
        size = rng.randint(1, min(max_middle, len(pieces)))
        a = rng.randint(0, len(pieces) - size)
        b = a + size
        middle = "".join(pieces[a:b])
        if not middle.strip() or (a, b) in out:
            continue
        lo = a
        while lo > 0 and offsets[a] - offsets[lo - 1] <= max_context:
            lo -= 1
        hi = b
        while hi < len(pieces) and offsets[hi + 1] - offsets[b] <= max_context:
            hi += 1
        out[(a, b)] = FimExample(path, text[offsets[lo]:offsets[a]], middle,
                                 text[offsets[b]:offsets[hi]], offsets[lo], offsets[hi])
    return [out[k] for k in sorted(out)]


def examples(repo: str | os.PathLike, *, n_per_file: int = 2, seed: int = 0,
             extensions: Iterable[str] = DEFAULT_EXTENSIONS, unit: str = "line",
             max_middle: int = 8, max_context: int = 2000,
             max_bytes: int = 200_000) -> tuple[list[FimExample], dict[str, Any]]:
    """FIM examples from every code file of ``repo`` and a report (files read, skipped, cut)."""
    if unit not in UNITS:
        raise FimError(f"unit={unit!r}: use one of {', '.join(UNITS)}")
    repo = Path(repo)
    exts = tuple(extensions)
    files, skipped = code_files(repo, exts, max_bytes=max_bytes)
    if not files:
        raise FimError(f"No code files in {repo} with the extensions {', '.join(exts)} "
                       f"({len(skipped)} skipped: {skipped[:5]}). Set `extensions` to the "
                       "languages of this repository.")
    out: list[FimExample] = []
    for p in files:
        rel = p.relative_to(repo).as_posix()
        rng = random.Random(f"{seed}:{rel}")
        out += cut(p.read_text(encoding="utf-8"), rng, path=rel, n=n_per_file, unit=unit,
                   max_middle=max_middle, max_context=max_context)
    report = {"files": len(files), "skipped_files": len(skipped), "skipped": skipped,
              "examples": len(out)}
    log.info("FIM: %d examples from %d files of %s (%d files skipped)", len(out), len(files),
             repo, len(skipped))
    return out, report


def chat_prompt(ex: FimExample) -> str:
    """The user turn of the chat fallback: the file with a gap to fill."""
    return (f"Fill in the code missing from `{ex.path}` where it says {FILL}. Answer with the "
            f"missing code only, exactly as it goes in the gap.\n\n{ex.prefix}{FILL}{ex.suffix}")


def raw_prompt(ex: FimExample, tokens: FimTokens, repo_name: str | None = None) -> str:
    """PSM order with repository context: ``<|repo_name|>`` and ``<|file_sep|>`` lines where the
    family has them and ``repo_name`` is given."""
    head = ""
    if repo_name and tokens.repo_name and tokens.file_sep:
        head = f"{tokens.repo_name}{repo_name}\n{tokens.file_sep}{ex.path}\n"
    return f"{head}{tokens.prefix}{ex.prefix}{tokens.suffix}{ex.suffix}{tokens.middle}"


def to_record(ex: FimExample, tokens: FimTokens | None, *, repo_name: str | None = None,
              system_prompt: str | None = None) -> dict:
    """A JSONL record: raw FIM text where ``tokens`` is given, else a chat example."""
    if tokens is not None:
        return {"raw_prompt": raw_prompt(ex, tokens, repo_name),
                "raw_completion": ex.middle + tokens.end, "special_tokens": tokens.strings(),
                "source": ex.path}
    msgs = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return {"messages": msgs + [{"role": "user", "content": chat_prompt(ex)},
                                {"role": "assistant", "content": ex.middle}], "source": ex.path}
