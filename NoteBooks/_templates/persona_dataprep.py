# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # {{persona_name}}: books to training data
#
# This notebook turns the persona's books into the training sets the fine-tuning notebooks use:
# clean passages (running headers, page numbers and front matter removed), whole chapters held
# out for evaluation, synthetic questions for each passage (Claude Haiku by default; cached, so
# nothing is ever paid for twice), and the V1 (passage completion) and V2 (question -> passage,
# verbatim) sets with a token-length report.
#
# Settings come from `persona.toml` beside this notebook; the parameters below override them
# (`None` keeps the config's value). Without books in the persona's folder it runs on the
# project's own sample book; without an API key use `qa_source="rule"` (labelled as such).
#
# *Generated from `NoteBooks/_templates/persona_dataprep.py` by `make notebooks`.*

# %% tags=["parameters"]
persona_dir: str = "{{persona_dir}}"  # persona folder holding persona.toml (relative to the project root)
books: str = None  # folder of the persona's books (None: persona.toml's)
sample_book: bool = None  # True: the project's sample book; None: only when the books folder is empty
qa_source: str = None  # anthropic, local or rule (None: persona.toml's)
qa_provider: str = "anthropic"  # the API of qa_source anthropic: anthropic (ANTHROPIC_API_KEY) or openai, any OpenAI-compatible server (OPENAI_API_KEY)
qa_base_url: str = None  # API root for qa_provider openai, e.g. http://localhost:11434/v1 for Ollama (None: OPENAI_BASE_URL, else OpenAI)
qa_model: str = None  # the model that asks (None: persona.toml's; with qa_provider openai name the server's model)
questions_per_passage: int = None  # synthetic questions per passage (None: persona.toml's)
budget_usd: float = None  # stop question generation before spending more (None: no cap)
concurrency: int = None  # API requests in flight (None: persona.toml's)
words: int = None  # passage length in words (None: persona.toml's)
overlap: int = None  # words shared by consecutive passages (None: persona.toml's)
min_words: int = None  # shorter passages are dropped (None: persona.toml's)
heldout_fraction: float = None  # share of passages held out as whole chapters (None: persona.toml's)
refusal_examples: int = None  # add this many out-of-scope questions answered in a fixed refusal style to V2 (None: persona.toml's, default 0)
model: str = "qwen3-14b"  # the model whose tokenizer measures lengths (and that asks when qa_source is local)
smoke: bool = None  # True: stand-in tokenizer/model; None: read FINETUNING_SMOKE
output_dir: str = None  # folder for the cache and training sets (None: qa_dataset/<Persona>)

# %% [markdown]
# ## Setup

# %%
from helpers.data import prep as dataprep
from helpers.notebooks import setup as notebook
from helpers.books import cleanreport, pdf
from helpers.data import persona as personas
from helpers.questions import generate as qa
from helpers.data import recipes

notebook.setup()
persona = personas.load(persona_dir, books=books, qa_source=qa_source, qa_model=qa_model,
                        questions_per_passage=questions_per_passage, budget_usd=budget_usd,
                        concurrency=concurrency, words=words, overlap=overlap, min_words=min_words,
                        heldout_fraction=heldout_fraction, refusal_examples=refusal_examples, smoke=smoke)
if persona.substitutions:
    print(persona.substitution_note())
out_folder = notebook.path(output_dir) or persona.dataset_dir
dataprep.settings_table(persona, output_folder=str(out_folder))

# %% [markdown]
# ## Books
# What was read, page by page, and what was left out and why.

# %%
folder, is_sample = dataprep.books_folder(persona, sample_book=sample_book)
corpus = pdf.load_corpus(folder, words=persona.data.words, overlap=persona.data.overlap,
                         min_words=persona.data.min_words)
print(("SAMPLE BOOK: " if is_sample else "") + corpus.summary())
notebook.table(corpus.report())

# %%
dataprep.skipped_table(corpus)

# %% [markdown]
# ## Cleaning report
# Per book, before any question is asked (or paid for): what each cleaning rule removed, with
# examples, what looks left over (phrases repeated across passages, lone numbers in sentences,
# very short lines) and a verdict. A book marked `check` deserves a look at its passages below.

# %%
notebook.table(cleanreport.summary(corpus))

# %%
notebook.table(cleanreport.rules(corpus))

# %%
notebook.table(cleanreport.leftovers(corpus))

# %% [markdown]
# ## Passages

# %%
dataprep.passage_histogram(corpus.passages, persona.data.words)

# %%
dataprep.passages_table(corpus.passages)

# %% [markdown]
# ## Held out for evaluation
# Whole chapters (or page ranges) are set aside before any question is generated; the
# passages beside them are dropped too, since neighbours overlap.

# %%
split = recipes.heldout_split(corpus.passages, persona.data.heldout_fraction)
print(f"{len(split.train)} passages for training, {len(split.heldout)} held out in {len(split.regions)} regions")
dataprep.regions_table(split)

# %% [markdown]
# ## Questions
# First what it would cost (nothing is spent for passages already in the cache), then the run.

# %%
cache_path = out_folder / "questions.jsonl"
estimate = qa.estimate(split.train, persona.data.questions_per_passage, persona.data.qa_model,
                       cached=cache_path, provider=qa_provider, base_url=qa_base_url)
print(estimate if persona.data.qa_source == "anthropic" else
      f"qa_source={persona.data.qa_source!r}: no API cost ({estimate.requests} passages to ask)")

# %%
result = qa.generate_questions(
    split.train, cache_path, n=persona.data.questions_per_passage, model=persona.data.qa_model,
    concurrency=persona.data.concurrency, budget_usd=persona.data.budget_usd,
    source=persona.data.qa_source, provider=qa_provider, base_url=qa_base_url,
    local_model=dataprep.local_question_model(persona.data.qa_source, model, smoke))
print(result.summary())

# %% [markdown]
# ## Sample question/answer pairs
# Every answer is its passage, verbatim (checked here).

# %%
qa.verify_verbatim(result.records, split.train)
dataprep.qa_pairs_table(result.records)

# %% [markdown]
# ## Training sets

# %%
sets = dataprep.write_sets(persona, split, result.records, out_folder, books=folder)  # books: their sha256 in dataprep.json
sets.table()

# %% [markdown]
# ## Token lengths
# Percentiles per set with the tokenizer of the model to be trained, the `max_seq_length` they
# suggest and how many examples that length would truncate.

# %%
tokenizer, choice = dataprep.load_tokenizer(model, smoke)
print(f"Tokenizer: {choice.describe()}")
dataprep.length_reports(sets, tokenizer, choice.profile.template_kwargs)
