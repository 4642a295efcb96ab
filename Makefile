# The two commands a newcomer needs: `make demo` (the end-to-end pipeline) and `make test`.
# Both create .venv from the requirements files when it is missing or older than them.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint clean-demo gpu-wheels

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(PY) run_pipeline.py

test: $(STAMP)
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check .

# Wheels that benchmarks/gpu_check.sh installs on the GPU machine (no network there): into build/wheels,
# which the device tool carries (carry: build/wheels).
gpu-wheels:
	bash benchmarks/fetch_gpu_wheels.sh
