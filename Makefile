# Two commands for a newcomer: `make run` and `make test`. Everything they need is installed here.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TORCH  := torch==2.13.0

.PHONY: install browser run test lint bench reliability clean db-stop

install: $(STAMP) browser

# The dashboard's browser tests drive Debian's chromium (never a browser download): installed
# here when missing and apt-get can (CI runs as root on Debian); otherwise those tests fail
# saying so.
browser:
	@command -v chromium >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1 \
		|| [ "$$(id -u)" != 0 ] \
		|| (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

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
test: $(STAMP) browser lint
	$(VENV)/bin/pytest -q

bench: $(STAMP)
	$(PY) -m bench.append_throughput --events 200000 --write BENCHMARKS.md
	$(PY) -m bench.render_overhead --pairs 30 --write BENCHMARKS.md
	$(PY) -m bench.rollup_rebuild --events 10000000 --write BENCHMARKS.md
	$(PY) -m bench.archive --events 10000000 --write BENCHMARKS.md
	$(PY) -m bench.dashboard --events 1000000 --write BENCHMARKS.md
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
