# Two commands do everything, each with its own setup on a fresh machine:
#   make demo   run the Mariya notebook (stand-in model on a CPU, the real one on a GPU)
#   make test   run the test suite
# Both create .venv first if needed (scripts/setup_venv.sh picks the CPU or GPU lock in locks/,
# and installs with uv when it can, pip otherwise).

PY := .venv/bin/python
GPU_LIBS_VENV := .venv-gpu-libs

.PHONY: demo test test-fast test-real lint setup notebooks clean-outputs bench sweep lock check-locks test-gpu-libs gpu-check

setup:
	@bash scripts/setup_venv.sh

demo: setup
	@$(PY) -m helpers.demo

test: setup
	@$(PY) -m pytest -q --durations=25 tests

# The fast lane: every test but the end-to-end ones in tests/e2e (notebook runs, sweeps,
# multi-process and long training); a few minutes once the stand-ins are cached
test-fast: setup
	@$(PY) -m pytest -q --durations=10 tests --ignore=tests/e2e

# The real-weights lane (not in CI): a real chat checkpoint trained for real here, e.g.
#   make test-real MODEL=qwen2.5-0.5b     (or a hub id, a model folder, a .gguf file)
test-real: setup
	@test -n "$(MODEL)" || { echo "make test-real needs MODEL=<registry name, hub id, folder or .gguf>"; exit 2; }
	@FINETUNING_REAL_MODEL="$(MODEL)" $(PY) -m pytest -q -s tests/real

# ruff: pyflakes, pycodestyle errors, import order, no print() in library code (pyproject.toml)
lint: setup
	@$(PY) -m ruff check .

# The tests on a CPU with the library versions GPU users get (locks/gpu.txt's transformers, trl,
# datasets, peft and accelerate; torch stays the CPU build), in their own environment: the fast
# lane (every library call the code makes: training, DPO, masks, export, loading) and the Mariya
# notebook end to end; `make test` runs the other notebooks on the CPU lock.
test-gpu-libs:
	@VENV=$(GPU_LIBS_VENV) FINETUNING_INSTALL=cpu-gpu-libs bash scripts/setup_venv.sh
	@$(GPU_LIBS_VENV)/bin/python -m pytest -q --durations=10 tests --ignore=tests/e2e
	@$(GPU_LIBS_VENV)/bin/python -m pytest -q \
		tests/e2e/test_notebooks.py::test_mariya_notebook_in_smoke_mode_learns_the_facts

# Resolve requirements*.txt into locks/ (keeps pins that still fit; LOCK_ARGS=--upgrade for new ones)
lock: setup
	@UV=$$(command -v uv || echo .venv/bin/uv) bash scripts/lock.sh $(LOCK_ARGS)

# The GPU install resolves for Python 3.11/3.12 on Linux x86_64 and every lock matches its input
check-locks: setup
	@bash scripts/check_locks.sh

notebooks: setup
	@$(PY) -m helpers.notebooks

# make sweep: a notebook over a grid of its parameters into outputs/sweeps/<name>/ (resumable;
# run it again to finish what is missing). Without nvidia-smi every point runs in smoke mode.
# Another grid: make sweep SWEEP="NOTEBOOK --name NAME --grid lora_r=8,16 --set epochs=2"
SWEEP ?= NoteBooks/Mariya/Qwen2.5_3B_Mariya_FineTuning.ipynb --name mariya-r-lr \
	--grid lora_r=16,32 --grid learning_rate=0.002,0.005
sweep: setup
	@$(PY) -m helpers.sweep $(SWEEP) $(if $(shell command -v nvidia-smi),,--set smoke=True)

# make gpu-check: the GPU paths on random-weight copies of Qwen3-14B and GPT-OSS-20B (both
# backends, a 24 GiB cap, the OOM ladder, exports) on an offline CUDA machine; one JSON file in
# outputs/gpu_check/. Installs trl/unsloth/bitsandbytes from gpu_wheels/ (bash scripts/gpu_wheels.sh
# on a machine with internet) when they are missing. Exits 2 at once without CUDA.
GPU_CHECK_PY ?= $(if $(wildcard $(PY)),$(PY),python3)
gpu-check:
	@$(GPU_CHECK_PY) scripts/gpu_check.py --install-wheels $(GPU_CHECK_ARGS)

bench: setup
	@$(PY) bench/masking_bench.py

clean-outputs:
	rm -rf outputs/* comparison_cache_all_models
