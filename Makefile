# `make test` does everything from a fresh clone: venv, install, lint, types, tests.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run demo test lint typecheck pytest fuzz bench ab clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The service on embedded defaults (SQLite under ./var, no Redis/S3/OpenAI needed):
# http://127.0.0.1:8000, status page at /status. Configure with the environment (README).
run: $(STAMP)
	$(BIN)/inventario serve

# A full local stack with injected faults (private Redis, PostgreSQL, moto S3, an OpenAI stub):
# tools/demo.py, run from the checkout (it is not in the wheel). DEMO_ARGS=--quick: a minute.
demo: $(STAMP)
	$(BIN)/python -m tools.demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench tools
	$(BIN)/ruff format --check src tests bench tools

typecheck: $(STAMP)
	$(BIN)/mypy src
	$(BIN)/mypy tools
	$(BIN)/mypy tests/typing
	MYPYPATH=. $(BIN)/mypy --no-namespace-packages bench

pytest: $(STAMP)
	$(BIN)/pytest

test: lint typecheck pytest

# The API fuzzer for longer than the suite's bounded run (tests/inventario/test_fuzz.py):
# schemathesis against inventario's own OpenAPI, every phase, on SQLite and a private
# PostgreSQL. FUZZ_SECONDS per backend; exits non-zero on any failure.
FUZZ_SECONDS ?= 300
fuzz: $(STAMP)
	$(BIN)/python -m tests.inventario.fuzz --seconds $(FUZZ_SECONDS)

bench: $(STAMP)
	$(BIN)/python bench/breaker_overhead.py
	$(BIN)/python bench/degradation.py
	$(BIN)/python bench/adapter_overhead.py
	$(BIN)/python bench/service_latency.py

# Before and after: the breaker (one process, ~1 min) and the adapters (a worktree of
# BASELINE with its own venv, ABBA; AB_TREE=path reuses one) against BASELINE, a commit.
AB_PAIRS ?= 2
ab: $(STAMP)
	@test -n "$(BASELINE)" || { echo "make ab BASELINE=<commit> [AB_TREE=<its worktree>] [AB_PAIRS=2]"; exit 2; }
	$(BIN)/python bench/breaker_ab.py --baseline $(BASELINE)
	$(BIN)/python bench/worktree_ab.py --baseline $(BASELINE) --pairs $(AB_PAIRS) \
		$(if $(AB_TREE),--tree $(AB_TREE)) -- bench/adapter_overhead.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
