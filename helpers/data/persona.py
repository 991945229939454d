"""A persona: the folder ``NoteBooks/<Persona>/`` and its ``persona.toml``.

The config holds the persona's name, its books folder, the system prompt and the data settings;
nothing in the code is specific to one author. Add a persona by copying a folder's
``persona.toml`` into ``NoteBooks/<NewPersona>/`` and pointing ``books`` at other books.

Settings resolve as: built-in defaults (for training: the model profile's), then
``persona.toml`` (``[data]``, ``[train]``), then notebook parameters (``None`` keeps the value
before it). An unknown key is an error that lists the known ones.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpers.core.paths import ROOT, work_dir
from helpers.core.paths import path as project_path
from helpers.models import smoke_mode

#: file types read as books (helpers.pdf.load_corpus)
BOOK_SUFFIXES = (".pdf", ".epub", ".txt", ".md", ".markdown")
#: the project's own book, used where a persona's books are missing in smoke mode
SAMPLE_BOOK = ROOT / "helpers" / "sample_book"


class PersonaError(ValueError):
    """A persona.toml is missing or has an unknown or badly typed setting."""


#: what a persona.toml ``[train]`` table may set (the fine-tuning notebooks' parameters)
TRAIN_KEYS = ("epochs", "learning_rate", "lora_r", "lora_alpha", "max_seq_length", "batch_size",
              "grad_accum", "seed")


@dataclass(frozen=True)
class DataSettings:
    words: int = 350                 # passage length in words
    overlap: int = 50                # words shared by consecutive passages
    min_words: int = 100             # shorter passages are dropped
    questions_per_passage: int = 2   # V2 synthetic questions per passage
    qa_source: str = "anthropic"     # anthropic, local or rule
    qa_model: str = "claude-haiku-4-5-20251001"
    concurrency: int = 8             # API requests in flight
    budget_usd: float | None = None  # stop question generation before spending more
    heldout_fraction: float = 0.1    # share of passages held out, as whole chapters
    refusal_examples: int = 0        # V2: add this many out-of-scope questions answered in a fixed refusal style (helpers.data.outofscope)


@dataclass(frozen=True)
class Persona:
    name: str
    folder: Path
    books: Path
    system_prompt: str
    data: DataSettings = field(default_factory=DataSettings)
    #: fixed prompts asked before and after training, the same for every model
    questions: tuple[str, ...] = ()
    #: more prompts for the model comparison (asked after ``questions``), for tighter intervals
    compare_prompts: tuple[str, ...] = ()
    #: training settings from ``[train]`` (between the profile's defaults and the parameters)
    train: dict = field(default_factory=dict)
    #: what smoke mode put in place of the persona's own settings, one sentence each
    substitutions: tuple[str, ...] = ()

    def train_settings(self, **parameters: Any) -> dict[str, Any]:
        """Training settings for a run: each parameter given (not None) wins, else the
        ``[train]`` value of persona.toml, else None (the model profile's default)."""
        unknown = sorted(set(parameters) - set(TRAIN_KEYS))
        if unknown:
            raise PersonaError(f"unknown training setting(s) {', '.join(unknown)}; known: {', '.join(TRAIN_KEYS)}.")
        return {k: (v if v is not None else self.train.get(k)) for k, v in parameters.items()}

    def substitution_note(self) -> str:
        """What smoke mode substituted, as lines to show; empty when nothing was."""
        return "\n".join(f"Smoke mode substituted {s}" for s in self.substitutions)

    @property
    def comparison_prompts(self) -> tuple[str, ...]:
        """Every prompt the comparison asks: ``questions`` then ``compare_prompts``, in order."""
        return tuple(dict.fromkeys(self.questions + self.compare_prompts))

    @property
    def slug(self) -> str:
        return self.folder.name

    @property
    def dataset_dir(self) -> Path:
        """Where this persona's question cache, training sets and held-out split live; a
        separate ``<Persona>-smoke`` folder when smoke mode substituted its books or question
        source, so those sets are never taken for the real ones."""
        return work_dir() / "qa_dataset" / (self.slug + ("-smoke" if self.substitutions else ""))


def has_books(folder: Path) -> bool:
    return folder.is_dir() and any(p.suffix.lower() in BOOK_SUFFIXES for p in folder.iterdir())


def load(folder: str | os.PathLike, *, smoke: bool | None = None, **overrides: Any) -> Persona:
    """Read ``folder/persona.toml`` and apply ``overrides`` (data settings or ``books`` /
    ``system_prompt``; ``None`` values are ignored).

    In smoke mode (``smoke``, else ``FINETUNING_SMOKE``) a run spends nothing and needs nothing
    from outside: questions come from the rule-based source unless ``qa_source`` is given, and
    the project's sample book stands in for a books folder with no books unless ``books`` is
    given. Each substitution is a sentence in ``Persona.substitutions``."""
    folder = project_path(folder)
    path = folder / "persona.toml"
    if not path.is_file():
        raise PersonaError(f"No persona config at {path}. Copy NoteBooks/JordanPeterson/persona.toml "
                           "there and edit its name, books and system_prompt.")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise PersonaError(f"{path}: not valid TOML ({e}).") from e
    data_raw = raw.pop("data", {})
    train_raw = raw.pop("train", {})
    top_known = {"name", "books", "system_prompt", "questions", "compare_prompts"}
    data_known = {f.name for f in dataclasses.fields(DataSettings)}
    unknown = (sorted(set(raw) - top_known) + [f"data.{k}" for k in sorted(set(data_raw) - data_known)]
               + [f"train.{k}" for k in sorted(set(train_raw) - set(TRAIN_KEYS))])
    bad_over = sorted(set(overrides) - top_known - data_known)
    if unknown or bad_over:
        raise PersonaError(
            f"{path}: unknown setting(s) {', '.join(unknown + bad_over)}. Known: "
            f"{', '.join(sorted(top_known))}; under [data]: {', '.join(sorted(data_known))}; "
            f"under [train]: {', '.join(TRAIN_KEYS)}.")
    lists = {}
    for key in ("questions", "compare_prompts"):
        value = raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(q, str) and q.strip() for q in value):
            raise PersonaError(f"{path}: `{key}` must be a list of non-empty strings.")
        lists[key] = tuple(value)
    for key in ("name", "books", "system_prompt"):
        if not str(raw.get(key, "")).strip():
            raise PersonaError(f"{path}: `{key}` is missing or empty.")
    over = {k: v for k, v in overrides.items() if v is not None}
    settings = {**data_raw, **{k: v for k, v in over.items() if k in data_known}}
    try:
        data = DataSettings(**settings)
    except TypeError as e:
        raise PersonaError(f"{path}: {e}") from e
    if data.qa_source not in ("anthropic", "local", "rule"):
        raise PersonaError(f"qa_source={data.qa_source!r}: use 'anthropic', 'local' or 'rule'.")
    books = Path(over.get("books", raw["books"])).expanduser()
    books = books if books.is_absolute() else ROOT / books
    substitutions = []
    if smoke_mode(smoke):
        if "qa_source" not in over and data.qa_source != "rule":
            substitutions.append(f"questions: rule-based instead of {data.qa_source!r} (smoke mode "
                                 "spends nothing and needs no API key; set qa_source to choose)")
            data = dataclasses.replace(data, qa_source="rule")
        if "books" not in over and not has_books(books):
            substitutions.append(f"books: the project's sample book instead of {books} (no books "
                                 "there; set books to choose)")
            books = SAMPLE_BOOK
    return Persona(name=raw["name"], folder=folder, books=books, substitutions=tuple(substitutions),
                   system_prompt=over.get("system_prompt", raw["system_prompt"]).strip(), data=data,
                   questions=lists["questions"], compare_prompts=lists["compare_prompts"],
                   train=dict(train_raw))
