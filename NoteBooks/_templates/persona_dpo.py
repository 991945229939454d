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
# # {{persona_name}}: {{title}}, DPO
#
# A preference stage (DPO, TRL's `DPOTrainer`) on pairs made from the persona's V2 set: for each
# question the **chosen** answer is the author's own passage, the **rejected** one the base
# model's greedy answer. It starts from the base model, not from the V2 run: a fresh LoRA adapter,
# and the reference is the base model itself, exactly the model that wrote the rejected answers.
# {{notes}}
#
# *Generated from `NoteBooks/_templates/persona_dpo.py` by `make notebooks`: edit the template,
# not this notebook.* Without a GPU run it in smoke mode (`-p smoke True`): the same steps on the
# tiny stand-in of the model's family.

# %% tags=["parameters"]
persona_dir: str = "{{persona_dir}}"  # persona folder holding persona.toml (relative to the project root)
model: str = "{{model}}"  # registry name or hub id (helpers.models.known_models())
qa_source: str = None  # anthropic, local or rule, if the V2 set must be made (None: persona.toml's)
sample_book: bool = None  # True: the project's sample book; None: only when the persona has no books
data_dir: str = None  # folder of the training sets (None: qa_dataset/<Persona>)
max_pairs: int = {{max_pairs}}  # V2 examples made into pairs, each costing one base-model answer (None: all)
heldout_fraction: float = 0.1  # share of questions held out to measure reward accuracy after training
beta: float = None  # how far the model may move from the reference (None: 0.1, the DPO paper's)
loss_type: str = None  # a TRL DPO loss: sigmoid, ipo, hinge, ... (None: sigmoid, standard DPO)
dpo_learning_rate: float = None  # DPO's learning rate (None: the SFT learning rate x 0.1)
epochs: float = {{epochs}}  # passes over the pairs (None: persona.toml [train], else the profile default)
lora_r: int = {{lora_r}}  # LoRA rank (None: persona.toml [train], else the profile default)
lora_alpha: int = {{lora_alpha}}  # LoRA alpha (None: persona.toml [train], else the profile default)
max_seq_length: int = None  # longest prompt + answer in tokens (None: persona.toml [train], else the profile default)
batch_size: int = None  # pairs per step (None: persona.toml [train], else the profile default)
grad_accum: int = None  # gradient accumulation steps (None: persona.toml [train], else the profile default)
seed: int = 42  # random seed for LoRA init, data order and the held-out split
backend: str = "auto"  # auto (Unsloth on a GPU when installed), unsloth or transformers
trained_questions: int = 4  # also ask this many V2 questions verbatim (trained phrasing) beside the persona's own (unseen)
auto: bool = True  # choose 4-bit or 16-bit, batch x accumulation, checkpointing and max length from free memory and the data; explicit values above win
fallback: bool = True  # on out-of-memory step down (shorter sequences, batch 1, lighter models); False stops and says what to set
output_dir: str = None  # run folder (None: outputs/<persona>-dpo-<model>, plus -smoke in smoke mode)
smoke: bool = None  # True: tiny stand-in on CPU; None: read FINETUNING_SMOKE

# %% [markdown]
# ## Setup

# %%
from helpers.training import autoconfig
from helpers.evaluation import phrasing
from helpers.data import prep as dataprep
from helpers.pipeline import finetune
from helpers.pipeline import preference
from helpers.runtime import memory
from helpers.notebooks import setup as notebook
from helpers.data import persona as personas
from helpers.runtime import loading
from helpers.training import fallback as ladder  # the out-of-memory ladder (`fallback` is a parameter)

notebook.setup()
notebook.environment()

# %% [markdown]
# ## Data
# The persona's V2 set (made from its books if it is not there yet): its questions and the
# author's passages become the prompts and the chosen answers.

# %%
persona = personas.load(persona_dir, qa_source=qa_source, smoke=smoke)
if persona.substitutions:
    print(persona.substitution_note())
sets = dataprep.training_sets(persona, "v2", sample_book=sample_book, model=model, smoke=smoke,
                              folder=notebook.path(data_dir))
sets.table()

# %% [markdown]
# ## Settings
# The training settings combine as for fine-tuning (profile defaults, persona.toml,
# auto-configuration, parameters); DPO's own settings follow, each default with its reason.

# %%
settings = persona.train_settings(epochs=epochs, lora_r=lora_r, lora_alpha=lora_alpha,
                                  max_seq_length=max_seq_length, batch_size=batch_size,
                                  grad_accum=grad_accum, seed=seed)
if auto:
    auto_choice, settings = autoconfig.suggest(model, sets.files["v2"], smoke=smoke, explicit=settings,
                                               backend=backend)
    print(f"Auto-configuration: {auto_choice}")
run = preference.PreferenceRun.start(
    model=model, output_dir=notebook.path(output_dir), name=f"{persona.slug}-dpo", smoke=smoke,
    system_prompt=persona.system_prompt,
    parameters={"persona": persona.name, "data": str(sets.files["v2"]), "auto": auto,
                "substitutions": list(persona.substitutions)},
    beta=beta, loss_type=loss_type, dpo_learning_rate=dpo_learning_rate, max_pairs=max_pairs,
    heldout_fraction=heldout_fraction, backend=backend, **settings)
dataset = run.load_data(sets.files["v2"], allow_duplicates=True)  # a question may come from several passages
print(f"{len(dataset)} V2 examples from {sets.files['v2']}")
questions = phrasing.with_trained(persona.questions, dataset.prompts(), trained_questions)
notebook.settings_table(run)

# %%
run.dpo_settings()

# %% [markdown]
# ## Model, pairs and training
# Free memory is checked against the model's estimate first. Then: load, answer the fixed
# questions, make the pairs (the base model answers every V2 question once; the answers are kept
# in the run folder, so a rerun only generates what is missing), DPO (live loss curve), answer
# again. On out-of-memory at any step the run steps down a ladder and says so.

# %%
print(memory.preload_check(run.choice, run.cfg.load_in_4bit, backend=loading.select_backend(run.cfg.backend),
                          load_in_8bit=run.cfg.load_in_8bit).message)
before = memory.memory_snapshot()
outcome = run.train_with_fallback(questions, automatic=fallback, on_step=lambda e: print(ladder.format_event(e)))
print(memory.format_snapshot(memory.memory_snapshot(), before))
print(f"Trained: {outcome.rung.describe()}; {outcome.result.steps} DPO steps in "
      f"{outcome.result.train_seconds:.0f} s, final loss {outcome.result.final_loss:.3f}")

# %% [markdown]
# ## The pairs
# What was kept: duplicates and pairs whose two answers are nearly the same are dropped; the
# held-out questions are never trained on.

# %%
print(run.pairs.stats)
run.pairs.table()

# %% [markdown]
# ## Masking check
# One pair as TRL's collator batches it, and the tokens each loss covers: the answer and the
# token that ends its turn, for the chosen and the rejected answer alike; never the system
# prompt, the question or the template's headers. The chosen part must be exactly what SFT trains.

# %%
mask = run.example_mask(0)
print("Chosen, rendered:\n" + mask["chosen_rendered"][:1500] + "\n\nChosen, trained:\n" + mask["chosen_trained"][:1500])
print("\nRejected, trained:\n" + mask["rejected_trained"][:1500])
print(f"\nChosen loss covers exactly the SFT-trained tokens: {mask['chosen_same_as_sft']}")

# %% [markdown]
# ## Rewards
# DPO's reward of an answer is beta x how much more likely the tuned model makes it than the
# reference does. The margin (chosen minus rejected) should grow and the accuracy (share of pairs
# with a positive margin) rise; on the held-out pairs they say whether the preference generalises.

# %%
run.reward_table()

# %%
run.reward_plot()

# %% [markdown]
# ## Evaluate: the same questions before and after
# The persona's questions are not in the V2 set (*unseen* phrasing); the last `trained_questions`
# are V2 questions asked verbatim (*trained*). `ngram_overlap` is the share of an answer's 8-word
# runs copied from the training answers.

# %%
run.phrasing_split(questions)

# %%
finetune.before_after_table(questions, run.answers["base_question"], run.answers["tuned_question"],
                            seen=run.trained_phrasing(questions))

# %% [markdown]
# ## Save
# The adapter loads on the base model like any fine-tuning run's: the comparison notebook takes
# this run as the variant `"<model>:dpo"`.

# %%
run.finish()
print(f"Run folder: {run.output_dir}")
notebook.files_table(run.output_dir)

# %%
notebook.run_summary(run)
