# Two commands do everything, each with its own setup on a fresh machine:
#   make demo   run the Mariya notebook (stand-in model on a CPU, the real one on a GPU)
#   make test   run the test suite
# Both create .venv first if needed (scripts/setup_venv.sh picks the CPU or GPU install).

PY := .venv/bin/python

.PHONY: demo test setup notebooks clean-outputs bench

setup:
	@bash scripts/setup_venv.sh

demo: setup
	@$(PY) -m helpers.demo

test: setup
	@$(PY) -m pytest -q tests

notebooks: setup
	@$(PY) -m helpers.notebooks

bench: setup
	@$(PY) bench/masking_bench.py

clean-outputs:
	rm -rf outputs/* comparison_cache_all_models
