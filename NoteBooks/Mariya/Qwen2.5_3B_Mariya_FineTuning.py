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
# # Mariya Sha: teaching Qwen2.5-3B facts it cannot know
#
# Mariya Sha is a wizard we made up, so no base model knows where she was born, what her staff
# is made of or what her familiar is called. This notebook asks the base model, fine-tunes a
# LoRA adapter on about 240 prompt/completion pairs (`mariya.jsonl`), and asks again. The
# difference is what the adapter taught.
#
# **Running it.** On a machine with an NVIDIA GPU it fine-tunes the real Qwen2.5-3B-Instruct.
# Without one, run it in *smoke mode* (`FINETUNING_SMOKE=1`, or the papermill parameter
# `-p smoke True`): the same steps run on a tiny offline stand-in of the Qwen2.5 family in a few
# minutes on a CPU. With `-p backend tinker -p model qwen3-30b-a3b` it trains on Thinking
# Machines' Tinker service instead (`TINKER_API_KEY`, no local GPU; the tokens it sends are
# counted in `run.json` and the summary at the end). All settings are in the next cell; `None`
# means "the model profile's default".

# %% tags=["parameters"]
model: str = "qwen2.5-3b"  # registry name, hub id, model folder or .gguf file (a small one such as qwen2.5-0.5b trains on a CPU)
data: str = "NoteBooks/Mariya/mariya.jsonl"  # prompt/completion JSONL (relative to the project root)
probes: str = "NoteBooks/Mariya/mariya_probes.jsonl"  # {question, key_fact, seen} lines scored for fact recall
question: str = "Who is Mariya Sha?"  # the question shown before and after training
system_prompt: str = ""  # system prompt on every example and question ("" for none)
epochs: float = None  # passes over the data (None: profile default)
learning_rate: float = None  # peak learning rate (None: profile default)
lora_r: int = None  # LoRA rank (None: profile default)
lora_alpha: int = None  # LoRA alpha (None: profile default)
max_seq_length: int = None  # longest example in tokens (None: profile default)
batch_size: int = None  # sequences per step (None: profile default)
grad_accum: int = None  # gradient accumulation steps (None: profile default)
seed: int = 42  # random seed for LoRA init and data order
replay: int = None  # everyday questions the base model answers, trained on beside the data, per pass (None: 128 for a real model, 0 for a stand-in)
backend: str = "auto"  # auto (Unsloth on a GPU when installed), unsloth, transformers, mlx (Apple silicon) or tinker (the Tinker service: TINKER_API_KEY, a model it serves such as qwen3-30b-a3b, no smoke mode)
output_dir: str = None  # run folder (None: outputs/mariya-<model>, plus -smoke in smoke mode)
smoke: bool = None  # True: tiny stand-in on CPU; None: read FINETUNING_SMOKE

# %% [markdown]
# ## Setup
# The machine and the package versions this run used (they are also saved in `run.json`).

# %%
from helpers import data as data_io
from helpers.evaluation import health, recall
from helpers.notebooks import setup as notebook
from helpers.pipeline import finetune, runs

notebook.setup()
notebook.environment()

# %% [markdown]
# The run: which model is really used (the stand-in in smoke mode) and every training setting
# after defaults and parameters are combined.

# %%
run = runs.start_run(  # a TinkerRun for backend="tinker", else a FineTuneRun
    model=model, output_dir=notebook.path(output_dir), name="mariya", smoke=smoke,
    system_prompt=system_prompt, parameters={"data": data, "probes": probes, "question": question},
    epochs=epochs, learning_rate=learning_rate, lora_r=lora_r, lora_alpha=lora_alpha,
    max_seq_length=max_seq_length, batch_size=batch_size, grad_accum=grad_accum, seed=seed,
    backend=backend, replay=replay)
notebook.settings_table(run)

# %% [markdown]
# ## Data
# The training pairs, validated (a bad line stops here with its `file:line`), and the probe
# questions whose answers must contain a taught key fact. Each fact is asked twice: once in a
# phrasing that is a training prompt (*trained*) and once in a phrasing the training data does
# not hold (*unseen*); the training data decides which is which.

# %%
dataset = run.load_data(notebook.path(data))
probe_set = recall.mark_seen(data_io.load_probes(notebook.path(probes)), dataset.prompts())
print(f"{len(dataset)} training examples, {len(probe_set)} probe questions "
      f"({sum(p['seen'] for p in probe_set)} in trained phrasings)")
notebook.preview_data(dataset, 5)

# %% [markdown]
# ## Model: the base model before training
# This is the first cell that needs the GPU (or smoke mode).

# %%
run.load_model()
before = run.ask([question], label="base_question")[0]
run.fact_recall(probe_set, label="base")
general_base = run.general_knowledge(label="base")
print(f"Q: {question}\nBase model: {before}\n")
print(f"General knowledge ({len(health.GENERAL_PROBES)} everyday questions): {general_base:.0%}\n")
run.recall_table()

# %% [markdown]
# ## Masking check
# A real model also trains on its own answers to everyday questions, 128 new ones in each pass
# (*replay*, the `replay` setting; none for a stand-in, which knows nothing general): without
# them a real 0.5B model carried Mariya's world into every answer ("The Mona Lisa was painted by
# Cindermaven"), and with the same ones every pass it memorised them and lost other answers.
# They are trained towards the base model's whole next-token distribution, not its one answer
# (the `replay_kl` setting, transformers backend), so they hold the model where it was without
# pushing it themselves.
# Only the assistant's answer and the token that ends its turn are trained; the prompt, the
# role headers and padding are not. Below: one example as the model sees it, then the part of
# it that carries loss.

# %%
stats = run.tokenize()
example = run.example_mask(0)
print(f"Trained tokens: {stats['trained_tokens']} of {stats['tokens']} ({stats['trained_share']:.1%}); "
      f"truncated examples: {stats['truncated']}\n")
print("Rendered:\n" + example["rendered"] + "\n")
print("Trained:\n" + example["trained"])

# %% [markdown]
# ## Train
# LoRA adapters on the base model; the loss curve is redrawn as training runs.

# %%
run.add_lora()
result = run.train()
print(f"{result.steps} steps in {result.train_seconds:.0f} s ({result.tokens_per_second:.0f} tokens/s), "
      f"final loss {result.final_loss:.3f}")

# %% [markdown]
# ## Evaluate: the tuned model
# Fact recall on trained phrasings measures whether the model answers the questions it was
# trained on; on unseen phrasings, whether it learned the facts well enough to answer them when
# asked differently. A high first and a low second column means memorised question-answer pairs
# rather than learned facts.

# %%
after = run.ask([question], label="tuned_question")[0]
run.fact_recall(probe_set, label="tuned")
general_tuned = run.general_knowledge(label="tuned")
print(f"Q: {question}\nBase : {before}\nTuned: {after}")
print(f"General knowledge ({len(health.GENERAL_PROBES)} everyday questions, none trained): "
      f"base {general_base:.0%} -> tuned {general_tuned:.0%}; a drop means tuning overwrote what "
      "the model knew")
run.recall_table()

# %%
finetune.before_after_table([p["question"] for p in run.probes], run.answers["probes_base"],
                            run.answers["probes_tuned"], [p["key_fact"] for p in run.probes],
                            seen=[p["seen"] for p in run.probes])

# %% [markdown]
# ## Save
# The adapter and tokenizer, per-epoch checkpoints, the loss plot and `run.json`.

# %%
run.finish()
print(f"Run folder: {run.output_dir}")
notebook.files_table(run.output_dir)

# %%
notebook.run_summary(run)
