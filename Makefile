# Two commands set up everything on a fresh machine: `make run` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA := out/sim/bench-heldout

.PHONY: run test test-all test-deps bench bench-quick bench-data clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, on its own: pip then takes the CPU build (a resolve of the whole project picks PyPI's CUDA
	# build, GBs, and runs the pipeline at half the speed on a CPU: docs/performance.md)
	$(PY) -m pip install --quiet 'torch==2.13.0'
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) jobs/label.py raypipe/examples/scans --out out/labels

# the quick suite: everything but the tests marked slow (subprocess jobs and kills, concurrent jobs, real
# ppafm simulations, PostgreSQL, Chromium, Ray Train); about 5 minutes on 2 cores
test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# every test, about 20 minutes on 2 cores: what CI runs (.ci/run)
test-all: $(STAMP) test-deps
	$(PY) -m pytest -q --durations=15

# the system packages some tests use (Debian, as root): PostgreSQL for the catalog, Chromium for the gallery;
# without them those tests skip and say why
test-deps:
	@need=""; command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need="$$need postgresql"; \
	command -v chromium >/dev/null 2>&1 || need="$$need chromium"; \
	if [ -n "$$need" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$need >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$need >/dev/null 2>&1; } || \
	    echo "test-deps: could not install$$need; their tests will skip"; \
	  else echo "test-deps: install$$need (apt-get, as root) or their tests will skip"; fi; \
	fi

# held-out molecules simulated for the benches that need simulated truth (~3 minutes on 2 cores)
bench-data: $(STAMP)
	$(PY) bench/heldout.py --n 40 --out $(DATA) --simulate-only

# every benchmark, full size: several hours on 2 cores (docs/benchmarks.md gives each one's time)
bench: $(STAMP) bench-data
	$(PY) bench/bench_depiction.py
	$(PY) bench/roundtrip.py
	$(PY) bench/bench_preprocess.py
	$(PY) bench/bench_layout.py
	$(PY) bench/bench_simulation.py
	$(PY) bench/bench_train.py
	$(PY) bench/bench_heads.py --data raypipe/examples/sim-sample
	$(PY) bench/bench_label.py
	$(PY) bench/bench_table.py
	$(PY) bench/bench_table.py --nights 365
	$(PY) bench/bench_poison.py
	$(PY) bench/bench_scale.py --data $(DATA)
	$(PY) bench/bench_candidates.py --data $(DATA)
	$(PY) bench/bench_identify.py --data $(DATA) --library out/library/catalog --n 30
	$(PY) bench/bench_identify.py --library out/library/catalog --experimental ../shared/experimental
	$(PY) bench/heldout.py --out $(DATA)-150 --n 150
	$(PY) bench/multinode.py --train

# every benchmark at a small size, to see that each runs (about 30 minutes on 2 cores; figures not comparable)
bench-quick: $(STAMP) bench-data
	$(PY) bench/bench_depiction.py --every 100
	$(PY) bench/roundtrip.py --every 40 --conditions clean,blur0.7
	$(PY) bench/bench_preprocess.py --repeats 3
	$(PY) bench/bench_layout.py --repeats 1 --threads 1
	$(PY) bench/bench_simulation.py --molecules 2 --params random:2
	$(PY) bench/bench_train.py --steps 10
	$(PY) bench/bench_heads.py --data raypipe/examples/sim-sample --steps 20 --val-every 10 --val-samples 8 --variants palette-focal
	$(PY) bench/bench_label.py --sizes 100 --compare 100 --repeat 1
	$(PY) bench/bench_table.py --rows 200 --new 20 --throughput 0
	$(PY) bench/bench_table.py --nights 12 --per-night 2
	$(PY) bench/bench_poison.py --good 4
	$(PY) bench/bench_scale.py --data $(DATA) --n 4
	$(PY) bench/bench_candidates.py --data $(DATA) --scans 1 --candidates 5
	$(PY) bench/bench_identify.py --data $(DATA) --library out/library/catalog --n 2 --shortlist 5 --no-warm
	$(PY) bench/heldout.py --out $(DATA) --n 40
	$(PY) bench/multinode.py --stacks 32

clean:
	rm -rf $(VENV) out .pytest_cache
