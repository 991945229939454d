"""The data-preparation stage of a persona, step by step (what the DataPrep notebook calls).

books -> cleaned passages -> held-out regions -> synthetic questions (cached) -> V1 and V2
training sets in ``qa_dataset/<Persona>/`` -> token-length report.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from helpers import data, models
from helpers.books import pdf
from helpers.books.passage import Passage
from helpers.core.figures import _pyplot
from helpers.core.paths import ROOT, work_dir
from helpers.data import outofscope, provenance, recipes
from helpers.data.persona import BOOK_SUFFIXES, Persona, has_books  # noqa: F401  (BOOK_SUFFIXES: re-export)
from helpers.questions import generate as qa
from helpers.runtime.loading import load_model, load_tokenizer  # noqa: F401  (load_tokenizer: re-export)

log = logging.getLogger(__name__)


def books_folder(persona: Persona, *, sample_book: bool | None = None) -> tuple[Path, bool]:
    """The folder to read and whether it is the project's sample book.

    ``sample_book=None`` uses the sample book only when the persona's folder has no books (and
    says so); ``True`` always uses it; ``False`` never does (an empty folder is then an error
    from :func:`helpers.pdf.load_corpus`)."""
    if sample_book is False or (sample_book is None and has_books(persona.books)):
        return persona.books, False
    folder = work_dir() / "outputs" / "sample_books"
    pdf.make_sample_pdf(folder / "the_patient_workshop.pdf")
    if sample_book is None:
        log.warning("No books in %s: using the project's sample book (%s) so the pipeline can "
                    "run. Put %s's books there for real data.", persona.books, folder, persona.name)
    return folder, True


def passage_histogram(passages: Sequence[Passage], words: int):
    """A histogram of passage lengths in words."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3))
    ax.hist([p.words for p in passages], bins=30, color="#4C72B0")
    ax.axvline(words, color="k", linestyle="--", linewidth=1, label=f"target {words}")
    ax.set_xlabel("words per passage")
    ax.set_ylabel("passages")
    ax.set_title(f"{len(passages)} passages")
    ax.legend()
    fig.tight_layout()
    plt.close(fig)  # shown once, as the cell's result
    return fig


def passages_table(passages: Sequence[Passage], n: int = 5, chars: int = 300):
    import pandas as pd
    return pd.DataFrame([{"book": p.book, "pages": f"{p.first_page}-{p.last_page}",
                          "chapter": p.chapter, "words": p.words,
                          "text": p.text[:chars] + ("..." if len(p.text) > chars else "")}
                         for p in passages[:n]])


@dataclass
class TrainingSets:
    folder: Path
    files: dict[str, Path] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def table(self):
        import pandas as pd
        return pd.DataFrame([{"set": k, "examples": self.counts.get(k), "file": str(p.relative_to(ROOT))
                              if p.is_relative_to(ROOT) else str(p)} for k, p in self.files.items()])


def write_sets(persona: Persona, split: recipes.Split, records: Sequence[dict],
               folder: str | os.PathLike | None = None, books: Path | None = None) -> TrainingSets:
    """V1 and V2 training sets (persona system prompt on every example) and the held-out split,
    as files in ``folder`` (default ``qa_dataset/<Persona>/``). V2 answers are checked to be
    their passages verbatim; ``[data] refusal_examples`` adds out-of-scope questions answered in
    a fixed refusal style to V2 (:mod:`helpers.data.outofscope`). dataprep.json records the
    sha256 of each book in ``books`` (the folder read) for the runs' data cards."""
    folder = Path(folder) if folder else persona.dataset_dir
    folder.mkdir(parents=True, exist_ok=True)
    v1 = recipes.v1_examples(split.train, persona.system_prompt)
    v2 = recipes.v2_examples(records, split.train, persona.system_prompt)
    v2 += outofscope.examples(persona.name, persona.data.refusal_examples, persona.system_prompt)
    out = TrainingSets(folder)
    out.files["v1"] = recipes.export_messages_jsonl(v1, folder / "v1_train.jsonl")
    out.files["v2"] = recipes.export_messages_jsonl(v2, folder / "v2_train.jsonl")
    out.files["heldout"] = split.save(folder / "heldout.json")
    out.counts = {"v1": len(v1), "v2": len(v2), "heldout": len(split.heldout)}
    (folder / "dataprep.json").write_text(json.dumps({
        "persona": persona.name, "system_prompt": persona.system_prompt,
        "counts": out.counts, "regions": split.regions,
        "substitutions": list(persona.substitutions),
        "sources": sorted({r.get("source", "?") for r in records}),
        "books_folder": str(books) if books else None,
        "books": provenance.book_hashes(books) if books else None,
        "recipe_options": {"refusal_examples": persona.data.refusal_examples}}, indent=1))
    return out


def qa_pairs_table(records: Sequence[dict], n: int = 6, chars: int = 200):
    import pandas as pd
    return pd.DataFrame([{"question": r["question"], "source": r.get("source"),
                          "book": r.get("book"), "pages": f"{r.get('first_page')}-{r.get('last_page')}",
                          "answer (passage, verbatim)": r["answer"][:chars] + "..."}
                         for r in records[:n]])


def settings_table(persona: Persona, **extra: Any):
    import pandas as pd
    rows = [("persona", persona.name), ("books", str(persona.books)),
            ("system prompt", persona.system_prompt)]
    rows += [(k, v) for k, v in persona.data.__dict__.items()]
    rows += list(extra.items())
    return pd.DataFrame(rows, columns=["setting", "value"]).set_index("setting")


def skipped_table(corpus):
    """What the reader left out: whole files (with the reason) and front/back-matter pages."""
    import pandas as pd
    rows = [{"book": f, "pages": "", "what": "file skipped", "why": reason}
            for f, reason in corpus.skipped_files]
    rows += [{"book": b, "pages": f"{a}-{z}", "what": kind, "why": "front/back matter"}
             for b, a, z, kind in corpus.skipped_sections]
    return pd.DataFrame(rows, columns=["book", "pages", "what", "why"])


def regions_table(split: recipes.Split):
    import pandas as pd
    return pd.DataFrame(split.regions, columns=["book", "chapter", "first_page", "last_page", "passages"])


def local_question_model(source: str, model: str, smoke: bool | None):
    """``(model, tokenizer)`` for ``qa_source="local"`` (the base model asks the questions),
    else ``None``."""
    if source != "local":
        return None
    return load_model(models.choose(model, smoke), backend="transformers")


def length_reports(sets: TrainingSets, tokenizer, template_kwargs: dict | None = None):
    """The token-length report of the V1 and V2 sets, one row each."""
    import pandas as pd
    rows = []
    for name in ("v1", "v2"):
        convs = data.load(sets.files[name], allow_duplicates=True).conversations
        if convs:
            rows.append({"set": name, **recipes.length_report(tokenizer, convs, **(template_kwargs or {}))})
    return pd.DataFrame(rows).set_index("set")


def prepare(persona: Persona, *, sample_book: bool | None = None, model: str = "qwen3-14b",
            smoke: bool | None = None, folder: str | os.PathLike | None = None,
            progress: bool = True) -> TrainingSets:
    """The whole data stage in one call (what a fine-tuning notebook runs when the persona's
    training sets are not there yet): books -> passages -> held-out split -> questions (from the
    cache when present; nothing is asked twice) -> V1/V2 sets."""
    folder = Path(folder) if folder else persona.dataset_dir
    books, is_sample = books_folder(persona, sample_book=sample_book)
    d = persona.data
    corpus = pdf.load_corpus(books, words=d.words, overlap=d.overlap, min_words=d.min_words)
    split = recipes.heldout_split(corpus.passages, d.heldout_fraction)
    result = qa.generate_questions(
        split.train, folder / "questions.jsonl", n=d.questions_per_passage, model=d.qa_model,
        concurrency=d.concurrency, budget_usd=d.budget_usd, source=d.qa_source,
        local_model=local_question_model(d.qa_source, model, smoke), progress=progress)
    if not result.complete:
        log.warning("Questions are incomplete (%s); the V2 set covers only the passages done. "
                    "Rerun to finish them.", result.summary().splitlines()[0])
    qa.verify_verbatim(result.records, split.train)
    sets = write_sets(persona, split, result.records, folder, books=books)
    log.info("Training sets in %s (%s%s)", folder, ", ".join(f"{k} {v}" for k, v in sets.counts.items()),
             "; from the sample book" if is_sample else "")
    return sets


def training_sets(persona: Persona, recipe: str, *, folder: str | os.PathLike | None = None,
                  **prepare_kwargs) -> TrainingSets:
    """The persona's training sets: reused when ``<folder>/<recipe>_train.jsonl`` exists, else
    made by :func:`prepare`."""
    if recipe not in ("v1", "v2"):
        raise ValueError(f"recipe={recipe!r}: use 'v1' (passage completion) or 'v2' (synthetic Q&A).")
    folder = Path(folder) if folder else persona.dataset_dir
    files = {k: folder / f"{k}_train.jsonl" for k in ("v1", "v2")}
    files["heldout"] = folder / "heldout.json"
    if all(p.is_file() for p in files.values()):
        log.info("Reusing the training sets in %s (delete them to rebuild)", folder)
        counts = {k: len(p.read_text().splitlines()) for k, p in files.items() if k != "heldout"}
        return TrainingSets(folder, files, counts)
    return prepare(persona, folder=folder, **prepare_kwargs)
