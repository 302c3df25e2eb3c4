# Skygate — `make run` serves the gateway, `make test` runs the whole suite.
# Both work on a fresh Debian machine with Python 3.11 and nothing else prepared.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_TEST_PACKAGES := redis-server postgresql wrk prometheus chromium

.DEFAULT_GOAL := help
.PHONY: help run serve migrate test test-fast lint typecheck format lock test-deps clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# -- environments -------------------------------------------------------------
$(BIN)/python:
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { \
	  echo "installing python3-venv (Debian ships venv without ensurepip)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(PIP) install -q --require-hashes -r requirements.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .  # the `skygate` command
	@touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(PIP) install -q --require-hashes -r requirements.txt -r requirements-dev.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .  # the `skygate` command
	@touch $(VENV)/.runtime $@

# -- running ------------------------------------------------------------------
migrate: $(VENV)/.runtime  ## apply database migrations (DATABASE_URL, default ./data/skygate.db)
	$(BIN)/alembic upgrade head

run: migrate  ## serve on http://127.0.0.1:8000 with the embedded defaults
	$(BIN)/python main_enterprise.py

serve: migrate  ## serve as in production: gunicorn on $$HOST:$$PORT (0.0.0.0 needs ADMIN_API_KEY)
	$(BIN)/gunicorn -c gunicorn.conf.py main_enterprise:app

# -- testing ------------------------------------------------------------------
test-deps:  ## install redis-server, PostgreSQL, wrk, Prometheus (promtool) and Chromium from Debian packages when missing
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

test: test-deps $(VENV)/.dev  ## install what the tests need, lint, and run the whole suite
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

lint: $(VENV)/.dev  ## ruff, mypy (strict) and the import contracts (pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: $(VENV)/.dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

lock:  ## re-pin requirements*.txt (with hashes) from requirements*.in
	$(PYTHON) -m venv /tmp/skygate-piptools && /tmp/skygate-piptools/bin/pip install -q pip-tools
	/tmp/skygate-piptools/bin/pip-compile -q --generate-hashes --strip-extras --allow-unsafe -o requirements.txt requirements.in
	/tmp/skygate-piptools/bin/pip-compile -q --generate-hashes --strip-extras --allow-unsafe -o requirements-dev.txt requirements-dev.in
	sed -i '/^--extra-index-url\|^--find-links\|^--index-url/d' requirements.txt requirements-dev.txt

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# -- benchmark ----------------------------------------------------------------
# bench: direct to the fake upstream, then Skygate (gunicorn, 2 workers, production setup).
# bench-compare: the same run plus the LiteLLM proxy (its own virtualenv, same litellm version).
# Results: docs/benchmark.md, docs/benchmark.png, docs/PERFORMANCE.md, bench/results/*.json.
# bench also runs bench/jobs.py: the job queue (enqueue-to-start, enqueue jobs/s, chat.batch
# under a tenant limit), into the docs' Jobs sections and bench/results/jobs-*.json,
# then bench/ws.py: /ws/agents (memory of 1,000 idle sessions, event latency on the same
# instance and across two), into PERFORMANCE.md's WebSocket section and bench/results/ws-*.json.
LITELLM_VENV    ?= /tmp/skygate-bench/litellm-venv
LITELLM_VERSION := $(shell sed -n 's/^litellm==\([^ ]*\).*/\1/p' requirements.txt)
.PHONY: bench bench-compare

$(VENV)/.bench: bench/requirements.txt | $(VENV)/.dev
	$(PIP) install -q -r bench/requirements.txt
	@touch $@

$(LITELLM_VENV)/.litellm-$(LITELLM_VERSION):
	$(PYTHON) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(LITELLM_VENV)/bin/python -m pip install -q 'litellm[proxy]==$(LITELLM_VERSION)'
	@touch $@

bench: test-deps $(VENV)/.bench  ## benchmark Skygate against direct calls, then the jobs and /ws/agents (docs/benchmark.md)
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.jobs
	$(BIN)/python -m bench.ws

bench-compare: test-deps $(VENV)/.bench $(LITELLM_VENV)/.litellm-$(LITELLM_VERSION)  ## bench, plus the LiteLLM proxy
	BENCH_LITELLM_VENV=$(LITELLM_VENV) $(BIN)/python -m bench.run --compare
