# Two commands for a newcomer: `make run` and `make test`. Everything they need is installed here.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TORCH  := torch==2.13.0

.PHONY: install run test lint bench reliability clean db-stop

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# A pinned CPU torch first: an unpinned one drags in a multi-GB CUDA build.
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[all,dev]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/renderledger demo

lint: $(STAMP)
	$(VENV)/bin/ruff check ledger ingest render reports service migrations tests bench
	$(VENV)/bin/ruff format --check ledger ingest render reports service migrations tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# pytest exits 5 when it collects nothing; make fails on any non-zero exit, so that cannot pass.
test: $(STAMP) lint
	$(VENV)/bin/pytest -q

bench: $(STAMP)
	$(PY) -m bench.append_throughput --events 200000 --write BENCHMARKS.md
	$(PY) -m bench.render_overhead --pairs 30 --write BENCHMARKS.md
	$(PY) -m bench.rollup_rebuild --events 10000000 --write BENCHMARKS.md
	$(PY) -m bench.invoices --events 10000000 --write BENCHMARKS.md
	$(PY) -m bench.alerts --seeds 5 --events 10000000 --write BENCHMARKS.md
	$(PY) -m bench.allocation --events 10000000 --tenants 1000 --days 30 --write BENCHMARKS.md
	$(PY) -m bench.budgets --histories 2000 --write BENCHMARKS.md
	$(PY) -m bench.sdxl_stages

# kill -9 the API 20 times and the postmaster 10 times under 3 producers, then a 3-minute
# bounded load; ~8 minutes; results in RELIABILITY.md
reliability: $(STAMP)
	$(PY) -m bench.reliability --api-kills 20 --postmaster-kills 10 --clients 3 --load-seconds 180 --write RELIABILITY.md

db-stop: $(STAMP)
	$(VENV)/bin/renderledger db stop

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
