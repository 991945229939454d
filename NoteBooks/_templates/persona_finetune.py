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
# # {{persona_name}}: {{title}}, {{recipe_label}}
#
# Fine-tunes {{title}} with LoRA to answer as {{persona_name}}, on the persona's training set
# ({{recipe_label}}), and shows the same questions answered before and after.
# {{notes}}
#
# *Generated from `NoteBooks/_templates/persona_finetune.py` by `make notebooks`: edit the
# template, not this notebook.* Without a GPU run it in smoke mode (`-p smoke True`): the same
# steps on the tiny stand-in of the model's family.

# %% tags=["parameters"]
persona_dir: str = "{{persona_dir}}"  # persona folder holding persona.toml (relative to the project root)
model: str = "{{model}}"  # registry name or hub id (helpers.models.known_models())
recipe: str = "{{recipe}}"  # v1 (passage completion) or v2 (synthetic questions, passage answers)
qa_source: str = None  # anthropic, local or rule, if the training sets must be made (None: persona.toml's)
sample_book: bool = None  # True: the project's sample book; None: only when the persona has no books
data_dir: str = None  # folder of the training sets (None: qa_dataset/<Persona>)
epochs: float = {{epochs}}  # passes over the data (None: persona.toml [train], else the profile default)
learning_rate: float = None  # peak learning rate (None: persona.toml [train], else the profile default)
lora_r: int = {{lora_r}}  # LoRA rank (None: persona.toml [train], else the profile default)
lora_alpha: int = {{lora_alpha}}  # LoRA alpha (None: persona.toml [train], else the profile default)
max_seq_length: int = None  # longest example in tokens (None: persona.toml [train], else the profile default)
batch_size: int = None  # sequences per step (None: persona.toml [train], else the profile default)
grad_accum: int = None  # gradient accumulation steps (None: persona.toml [train], else the profile default)
seed: int = 42  # random seed for LoRA init and data order
backend: str = "auto"  # auto (Unsloth on a GPU when installed), unsloth or transformers
trained_questions: int = 4  # also ask this many training-set questions verbatim (trained phrasing) beside the persona's own (unseen)
auto: bool = True  # choose 4-bit or 16-bit, batch x accumulation, checkpointing and max length from free memory and the data; explicit values above win
export: list = []  # also export after training: adapter, merged, gguf (each reloaded and asked a question)
keep_checkpoints: int = 0  # per-epoch checkpoints kept (0: all, so that the best one can be chosen below)
copying_ceiling: float = 0.2  # best checkpoint: the most copying allowed (share of answers' 8-word runs found verbatim in the training passages)
fallback: bool = True  # on out-of-memory step down (shorter sequences, batch 1, lighter models); False stops and says what to set
output_dir: str = None  # run folder (None: outputs/<persona>-<recipe>-<model>, plus -smoke in smoke mode)
smoke: bool = None  # True: tiny stand-in on CPU; None: read FINETUNING_SMOKE

# %% [markdown]
# ## Setup

# %%
from helpers.training import autoconfig
from helpers.evaluation import phrasing
from helpers.data import prep as dataprep
from helpers.pipeline import finetune
from helpers.runtime import memory
from helpers.notebooks import setup as notebook
from helpers.data import persona as personas
from helpers.runtime import loading
from helpers.training import fallback as ladder  # the out-of-memory ladder (`fallback` is a parameter)

notebook.setup()
notebook.environment()

# %% [markdown]
# ## Data
# The persona's training set: made from its books if it is not there yet (questions come from
# the cache when present, so nothing is paid for twice).

# %%
persona = personas.load(persona_dir, qa_source=qa_source, smoke=smoke)
if persona.substitutions:
    print(persona.substitution_note())
sets = dataprep.training_sets(persona, recipe, sample_book=sample_book, model=model, smoke=smoke,
                              folder=notebook.path(data_dir))
sets.table()

# %% [markdown]
# ## Settings
# Auto-configuration measures the training set's token lengths and the GPU's free memory and
# picks the memory settings, each with its reason; a value set in persona.toml `[train]` or as a
# parameter wins over it. Then every setting, as combined: profile defaults, persona.toml,
# auto-configuration, parameters.

# %%
settings = persona.train_settings(epochs=epochs, learning_rate=learning_rate, lora_r=lora_r,
                                  lora_alpha=lora_alpha, max_seq_length=max_seq_length,
                                  batch_size=batch_size, grad_accum=grad_accum, seed=seed)
if auto:
    auto_choice, settings = autoconfig.suggest(model, sets.files[recipe], smoke=smoke, explicit=settings,
                                               backend=backend)
    print(f"Auto-configuration: {auto_choice}")
run = finetune.FineTuneRun.start(
    model=model, output_dir=notebook.path(output_dir), name=f"{persona.slug}-{recipe}", smoke=smoke,
    system_prompt=persona.system_prompt,
    parameters={"persona": persona.name, "recipe": recipe, "data": str(sets.files[recipe]), "auto": auto,
                "substitutions": list(persona.substitutions)},
    backend=backend, keep_checkpoints=keep_checkpoints, **settings)
dataset = run.load_data(sets.files[recipe], allow_duplicates=True)  # V1 prompts rotate by design
print(f"{len(dataset)} {recipe.upper()} examples from {sets.files[recipe]}")
questions = phrasing.with_trained(persona.questions, dataset.prompts(), trained_questions)
notebook.settings_table(run)

# %%
notebook.preview_data(dataset, 3)

# %% [markdown]
# ## Model and training
# Free memory is checked against the model's estimate first. Then: load, answer the fixed
# questions, train (live loss curve), answer again. On out-of-memory at any of these steps the
# run steps down a ladder (shorter sequences, batch 1, then lighter models) and says so.

# %%
print(memory.preload_check(run.choice, run.cfg.load_in_4bit, backend=loading.select_backend(run.cfg.backend),
                          load_in_8bit=run.cfg.load_in_8bit).message)
before = memory.memory_snapshot()
outcome = run.train_with_fallback((), questions, automatic=fallback,
                                  on_step=lambda e: print(ladder.format_event(e)))
print(memory.format_snapshot(memory.memory_snapshot(), before))
print(f"Trained: {outcome.rung.describe()}; {outcome.result.steps} steps in "
      f"{outcome.result.train_seconds:.0f} s, final loss {outcome.result.final_loss:.3f}")

# %% [markdown]
# ## Masking check
# One example as the model saw it, then the part that carried loss: the answer and the token
# that ends its turn, nothing else.

# %%
example = run.example_mask(0)
print("Rendered:\n" + example["rendered"][:1500] + "\n\nTrained:\n" + example["trained"][:1500])

# %% [markdown]
# ## Evaluate: the same questions before and after
# The persona's questions are not in the training set (*unseen* phrasing); the last
# `trained_questions` are training questions asked verbatim (*trained*). `ngram_overlap` is the
# share of an answer's 8-word runs copied from the training answers: high on trained phrasings
# but low on unseen ones means the model recites what it was trained on for those questions, not
# that it learned to answer new ones as the persona.

# %%
run.phrasing_split(questions)

# %%
finetune.before_after_table(questions, run.answers["base_question"], run.answers["tuned_question"],
                            seen=run.trained_phrasing(questions))

# %% [markdown]
# ## The best checkpoint
# Training left a checkpoint at the end of every epoch (`keep_checkpoints`). Each one answers a
# few questions made from the held-out chapters (sampled, the same seed for all) and is scored:
#
# - **bits per byte**: how well the checkpoint predicts the held-out chapters' text, which it never trained on (lower is better).
# - **Burrows' Delta**: the distance between the word-frequency profile of its answers and the author's passages (lower is closer to the author's style).
# - **copying**: the share of its answers' 8-word runs found verbatim in the training passages (lower is more of its own writing).
# - **recitation**: the share of sampled training passages it continues word for word for 50 words or more when given their first 32 (lower: it learned the voice, not the text).
#
# The best checkpoint has the lowest Delta among those copying at most `copying_ceiling` (ties: the
# lower bits per byte). It is recorded in run.json (`best_checkpoint`) and `best_checkpoint.json`;
# the comparison asks it as `<model>:<recipe>@best`. Results are cached per checkpoint in the run
# folder (`checkpoint_eval/`).

# %%
checks = run.best_checkpoint(sets.folder, copying_ceiling=copying_ceiling)
print(checks.explain())
checks.table()

# %%
checks.plot(run.output_dir / "checkpoints.png")

# %% [markdown]
# ## Save

# %%
run.finish()
print(f"Run folder: {run.output_dir}")
notebook.files_table(run.output_dir)

# %% [markdown]
# ## Export
# What the `export` parameter asks for, each format reloaded and asked the first question.

# %%
finetune.export_table(run, export, persona.questions[0])

# %%
notebook.run_summary(run)
