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
# # {{persona_name}}: every model, base and tuned, compared
#
# Each variant (a base model, or a base model plus the adapter a fine-tuning notebook saved) is
# asked the same prompts with the same system prompt and the same decoding. Reasoning (Qwen3
# think blocks, the GPT-OSS analysis channel) is stripped by one function before anything is
# scored, and empty answers are counted, never dropped. Perplexity is measured on the held-out
# chapters saved before training, which no adapter has seen. Intervals are 95% bootstrap
# intervals over prompts: with a few dozen prompts, differences inside them are noise.
#
# One variant at a time: load, generate, score, free the memory, cache the result in
# `comparison_cache_all_models/`. A rerun reuses every entry whose prompts, settings and adapter
# are unchanged, and recomputes the others.
#
# *Generated from `NoteBooks/_templates/persona_comparison.py` by `make notebooks`.* Without a
# GPU run it in smoke mode (`-p smoke True`): every model is replaced by its family's stand-in.

# %% tags=["parameters"]
persona_dir: str = "{{persona_dir}}"  # persona folder holding persona.toml (relative to the project root)
variants: list = {{variants}}  # one per variant: a base model, model:recipe (that notebook's run), or a run folder; add @best (its best checkpoint) or @checkpoint-<step> to a run, e.g. "qwen3-14b:v2@best"
runs: list = []  # more run folders to compare (e.g. sweep points)
data_dir: str = None  # folder of the training sets and held-out split (None: qa_dataset/<Persona>)
qa_source: str = None  # anthropic, local or rule, if the training sets must be made (None: persona.toml's)
sample_book: bool = None  # True: the project's sample book; None: only when the persona has no books
system_prompt: str = "persona"  # persona (the persona prompt for every model) or none (no system prompt for any)
decoding: str = "greedy"  # greedy, or sampled with each family's recommended settings
max_new_tokens: int = None  # answer length cap in tokens (None: the family's default)
trained_questions: int = 4  # also ask this many V2 training questions verbatim (trained phrasing); only the phrasing table uses them
retention: bool = True  # also ask general questions whose answers should not change
recitation_passages: int = 50  # training passages per variant given their first 32 words to see if the model recites the rest (0: skip; 8 at most on a stand-in)
out_of_scope: bool = True  # also ask questions the persona cannot answer (after the author's time, about the model, topics absent from the books)
knowledge_questions: int = 20  # closed-book fact questions from trained chapters, and as many from held-out ones (0: skip the knowledge check)
knowledge_source: str = None  # rule, local or anthropic for those questions (None: rule in smoke mode, else the persona's qa_source)
judge: bool = False  # ask a model which answer sounds more like the persona (blind, both orders; needs the judge_provider's key)
judge_provider: str = "anthropic"  # anthropic (ANTHROPIC_API_KEY) or openai, any OpenAI-compatible server (OPENAI_API_KEY)
judge_base_url: str = None  # API root for judge_provider openai, e.g. http://localhost:11434/v1 (None: OPENAI_BASE_URL, else OpenAI)
judge_model: str = None  # the judge (None: Claude Haiku; with judge_provider openai name the server's model)
judge_budget_usd: float = 1.0  # stop judging before spending more
judge_batch: bool = False  # send the judge's requests as batches: half the price, answered within 24 h (the cell waits; a rerun collects, never resubmits)
cache_dir: str = None  # per-variant results (None: comparison_cache_all_models in the project root)
output_dir: str = None  # where the tables go (None: outputs/comparison-<Persona>, plus -smoke in smoke mode)
smoke: bool = None  # True: tiny stand-ins on CPU; None: read FINETUNING_SMOKE

# %% [markdown]
# ## Setup

# %%
from helpers.evaluation import compare
from helpers.evaluation import plots as compare_plots
from helpers.data import prep as dataprep
from helpers.notebooks import setup as notebook
from helpers.data import persona as personas
from helpers.evaluation import judge as llm_judge
from helpers.evaluation import phrasing
from helpers.evaluation import audits, robustness
from helpers.evaluation import knowledge_run, knowledge_judge

notebook.setup()
notebook.environment()

# %% [markdown]
# ## Data
# The author's text: the held-out passages (perplexity) and the training passages (style and
# memorisation references). Made from the books if the persona's sets are not there yet.

# %%
persona = personas.load(persona_dir, qa_source=qa_source, smoke=smoke)
if persona.substitutions:
    print(persona.substitution_note())
sets = dataprep.training_sets(persona, "v1", sample_book=sample_book, smoke=smoke,
                              folder=notebook.path(data_dir))
texts = compare.Texts.from_sets(sets.folder)
print(f"{len(texts.heldout)} held-out passages, {len(texts.training)} training passages, from {sets.folder}")
v2_prompts = phrasing.training_prompts(sets.files["v2"])
trained = phrasing.trained_sample(v2_prompts, trained_questions, exclude=persona.comparison_prompts)
notebook.table([{"prompt": p} for p in persona.comparison_prompts])

# %% [markdown]
# ## Evaluate every variant
# A variant whose adapter is missing is listed and skipped (run its fine-tuning notebook first).

# %%
chosen = compare.variants(persona, list(variants) + list(runs), smoke=smoke)
settings = compare.Settings(system_prompt=system_prompt, decoding=decoding,
                            max_new_tokens=max_new_tokens, retention=retention, recitation=recitation_passages)
result = compare.run(chosen, prompts=persona.comparison_prompts, persona_prompt=persona.system_prompt,
                     texts=texts, settings=settings, cache_dir=notebook.path(cache_dir), on_event=print,
                     trained_prompts=trained, probes=robustness.default_probes(persona.name) if out_of_scope else ())
result.variants_table()

# %% [markdown]
# ## Summary
# Per variant: the estimate and its 95% interval over prompts. `delta` is Burrows' Delta to the
# author (lower is closer); `longest_copy_share` and `ngram_overlap` measure copying from the
# training passages (lower: written, not recited); `empty_rate` counts answers with no text.
# Perplexity is per token, and the families' tokenizers differ: compare it within a family only.
# Bits per byte does not depend on the tokenizer and compares across families. The `recitation_*`
# and `robust_*` columns are explained in their own sections below.

# %%
summary = result.summary()
result.table()

# %%
compare_plots.grouped_bars(summary, ["tfidf", "delta", "words", "empty_rate", "ngram_overlap", "perplexity"])

# %% [markdown]
# ## What changed from each base model
# Paired over the same prompts: the tuned variant minus its own base model, with a paired
# bootstrap interval.

# %%
per_prompt = result.per_prompt()
compare_plots.format_delta_table(compare_plots.delta_table(
    per_prompt, ["tfidf", "delta", "words", "type_token_ratio", "ngram_overlap"]))

# %%
compare_plots.progression(summary, "tfidf")

# %%
compare_plots.radar(summary, ["tfidf", "delta", "type_token_ratio", "ngram_overlap", "perplexity"])

# %% [markdown]
# ## Trained and unseen phrasings
# The prompts above are checked against each run's training set and are normally *unseen*. The
# `trained_questions` V2 training questions, asked verbatim and left out of every other table,
# are *trained* phrasings for a run whose training set holds them (a V1 run trained on other
# prompts, so for it they are unseen; for a base model the V2 set decides). Each metric on trained phrasings, then on unseen ones
# (`_unseen`): a tuned model that copies its training answers (`ngram_overlap`,
# `longest_copy_share`) on trained phrasings but not on unseen ones recites what it memorised.

# %%
phrasing.comparison_split(result, v2_prompts)

# %% [markdown]
# ## Recitation
# Each variant gets the first 32 words of up to `recitation_passages` passages from its own
# training set (a fixed sample), inside the conversation that passage was trained in, and
# continues greedily. `recitation_share_verbatim` is the share of those passages it continues
# word for word for at least 50 words (95% Wilson interval); `recitation_longest_run` is the
# longest word-for-word run in words (64 at most). Beside them, the copying score of the answers
# above (`longest_copy_share`, `ngram_overlap`): a model can copy little when asked questions yet
# recite when prompted with the text itself. A base model never trained on the passages gives the
# floor. A run's figures also go into its data card (`data_card.json` in the run folder).

# %%
audits.plot(summary)

# %%
audits.examples(result)

# %% [markdown]
# ## Answers
# Length per prompt (empty answers marked), the author's keywords in each variant's answers,
# and the answers themselves.

# %%
compare_plots.prompt_lengths(per_prompt)

# %%
compare_plots.keyword_heatmap(result.keywords())

# %%
compare_plots.word_clouds(result.answers(), bases=result.bases())

# %%
result.answers_table()

# %% [markdown]
# ## Retention
# General questions whose answers fine-tuning should not change (`retention` in the summary is
# the word overlap with the base model's answer, 1.0 = unchanged).

# %%
result.retention()

# %% [markdown]
# ## Out-of-scope questions
# Questions the persona cannot answer, in three categories: events after the author's time,
# questions about the model itself, and topics the books never touch (`helpers/data/outofscope.py`,
# with the persona's name filled in). Each answer is scored by rules, one sentence per metric
# printed below: whether it stays in voice, whether it declines to invent, whether it brings in
# numbers or names found in neither the question nor the books, and its Burrows' Delta to the author.

# %%
print(robustness.explain())
robustness.table(result)

# %%
robustness.plot(summary)

# %%
robustness.answers_table(result)

# %% [markdown]
# ## Knowledge or voice?
# Fine-tuning on books reliably changes how a model writes; whether it also learns what the books
# say is another question (Ovadia et al. 2023; Gekhman et al. 2024). Every variant answers
# closed-book fact questions, without the book, made from chapters the tuned models trained on
# (*trained*) and from the held-out chapters no model saw (*heldout*); each question carries the
# key facts its passage holds. An answer is `correct` when it contains every key fact (case,
# punctuation and number words normalised), `dont_know` when it is empty or says it does not know,
# and `wrong` otherwise. `accuracy` is the share correct, with its 95% Wilson interval in brackets.
# Answers are cached per variant like the rest of the comparison.

# %%
facts = (knowledge_run.questions(persona, sets.folder, knowledge_questions, source=knowledge_source,
                                 smoke=smoke, model=chosen[0].model) if knowledge_questions else [])
known = knowledge_run.run(result, facts, cache_dir=notebook.path(cache_dir), on_event=print) if facts else None
known.table() if known else "not run: knowledge_questions=0 (or no passages to ask about)"

# %% [markdown]
# With `judge=True` an LLM also grades each answer against its key facts, blind (the `judge`
# column below; cached, within `judge_budget_usd`); the table then counts its grades.

# %%
grader = dict(provider=judge_provider, base_url=judge_base_url, model=judge_model)
if judge and known:
    print(knowledge_judge.estimate(known, **grader))
    knowledge_judge.grade(known, budget_usd=judge_budget_usd, progress=True, **grader)
known.table(by="judge") if judge and known else "not run: judge=False"

# %% [markdown]
# Shares of correct, wrong and "don't know" answers per variant, trained chapters beside held-out
# ones; the black bar is the accuracy's 95% interval.

# %%
known.plot() if known else None

# %% [markdown]
# The verdict, per tuned model against its own base. *Learned the facts*: on trained-chapter
# questions it is right more often than its base, and the 95% interval of the gain (Newcombe)
# lies above 0. *Only the voice*: not that, but its answers moved toward the author (`tfidf` up or
# `delta` down in the paired table above, interval excluding 0, and neither moving away). *Neither*:
# neither. Where the facts are not learned, answer factual questions with retrieval (RAG over the books).

# %%
if known:
    print(known.verdict_text())
known.verdicts() if known else None

# %%
known.per_question() if known else None

# %% [markdown]
# ## LLM judge (optional)
# Each tuned model against its own base, prompt by prompt: Claude sees the persona, the question
# and two unnamed answers, twice with the order swapped. The cost is shown first; it runs only
# with `judge=True`. `win_rate` counts ties as half; `consistency` is the share of prompts where
# both orders agree; `position_bias` near 0.5 means the judge did not favour the first answer.

# %%
to_judge = llm_judge.pairs(result.answers(), result.prompts, result.bases(), missing_ok=True)
judge_api = dict(provider=judge_provider, base_url=judge_base_url, model=judge_model, batch=judge_batch)
print(llm_judge.estimate(to_judge, persona_name=persona.name, persona_description=persona.system_prompt,
                         **judge_api))
verdicts = None
if judge and to_judge:
    verdicts = llm_judge.run(to_judge, persona_name=persona.name, persona_description=persona.system_prompt,
                             budget_usd=judge_budget_usd, progress=True, **judge_api)
    print(verdicts.summary())
verdicts.table() if verdicts else ("not run: judge=False" if not judge else "not run: nothing to judge")

# %% [markdown]
# ## Save

# %%
out = notebook.path(output_dir) or compare.default_output_dir(persona, smoke)
print(f"Saved {result.save(out)}")
if known:
    print(f"Saved {known.save(out)}")
notebook.files_table(out)
