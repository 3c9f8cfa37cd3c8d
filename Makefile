# Two commands set up everything on a fresh machine: `make run` (main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, on its own: pip then takes a CPU build where the machine has one on disk (a resolve of the
	# whole project picked PyPI's CUDA build, GBs, over it)
	$(PY) -m pip install --quiet 'torch==2.13.0'
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) jobs/label.py examples/scans --out out/labels

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) bench/bench_depiction.py
	$(PY) bench/bench_simulation.py
	$(PY) bench/bench_label.py
	$(PY) bench/bench_train.py

clean:
	rm -rf $(VENV) out .pytest_cache
