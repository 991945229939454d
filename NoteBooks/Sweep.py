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
# # Sweep: one notebook over a grid of its parameters
#
# Runs a fine-tuning notebook with papermill at every point of a grid (for example LoRA rank x
# learning rate), one folder per point under `outputs/sweeps/<name>/` with the executed notebook
# and its `run.json`, then compares the points in a table and a plot.
#
# **Resuming.** Run it again with the same settings: points whose `run.json` says finished with
# the same parameters are skipped, the others run. A point that failed is kept as failed until
# `retry_failed` is True. The same from a terminal:
# `python -m helpers.sweep NOTEBOOK --name NAME --grid lora_r=16,32 --grid learning_rate=0.002,0.005`
# (or `make sweep`).
#
# Without a GPU, set `smoke` to True: every point runs on the tiny stand-in (about 3 minutes a
# point on 2 cores with the stand-in's 24 epochs; put `epochs: 2` in `fixed` for a quick look).

# %% tags=["parameters"]
notebook: str = "NoteBooks/Mariya/Qwen2.5_3B_Mariya_FineTuning.ipynb"  # the notebook run at every point (relative to the project root)
name: str = "mariya-r-lr"  # the sweep's folder under root
grid: str = "lora_r: 16, 32; learning_rate: 0.002, 0.005"  # axes NAME: V1, V2 separated by ; (values take the notebook's parameter types)
fixed: str = ""  # parameters set at every point, NAME: VALUE separated by ; (for example epochs: 2)
metric: str = None  # metric to plot (None: fact_recall_tuned when recorded, else eval_loss, else final_loss)
retry_failed: bool = False  # True: rerun the points that failed earlier with the same parameters
root: str = None  # folder that holds the sweeps (None: outputs/sweeps)
smoke: bool = None  # True: every point on the tiny stand-in; None: read FINETUNING_SMOKE

# %% [markdown]
# ## Setup
# The machine and the package versions (each point's `run.json` records its own).

# %%
from helpers.notebooks import sweep
from helpers.notebooks.setup import environment, setup

setup()
environment()

# %% [markdown]
# ## The points
# Every combination of the grid, what is already done and what will run (and why).

# %%
sweep.plan(notebook, name, grid, fixed, root=root, metric=metric, smoke=smoke,
           retry_failed=retry_failed).plan_table()

# %% [markdown]
# ## Run
# A line as each point starts and one as it ends; a point that fails is recorded (its error is in the table below and in its
# `executed.ipynb`) and the sweep goes on.

# %%
result = sweep.run_sweep(notebook, name, grid, fixed, root=root, metric=metric, smoke=smoke,
                         retry_failed=retry_failed)

# %% [markdown]
# ## Results
# One row per point: its values, status, wall time, final training loss and every metric in its
# `run.json` (also saved as `results.csv`).

# %%
result.table()

# %%
result.plot(metric)

# %% [markdown]
# ## Best checkpoint per point
# Where a point's notebook scores its per-epoch checkpoints (the persona fine-tuning notebooks'
# "best checkpoint" section), the checkpoint it chose: the lowest Burrows' Delta to the author
# (word-frequency distance of the answers to the author's passages, lower is closer) among the
# checkpoints whose copying (share of answers' 8-word runs found verbatim in the training
# passages) is at most the ceiling, with its held-out bits per byte (how well it predicts unseen
# chapters, lower is better). The same numbers are in the table above as `best_checkpoint_*`.

# %%
result.best_checkpoints()

# %% [markdown]
# ## Files
# `sweep.json` (the grid, the fixed parameters and every point's record), `results.csv`,
# `results.png`, and one folder per point with its `executed.ipynb` and `run.json`.

# %%
print(f"Sweep folder: {result.folder}")
