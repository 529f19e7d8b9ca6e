# Guiju: `make run` starts everything on a fresh machine; `make test` runs the tests.
SHELL := /bin/bash
UV_VERSION := 0.13.9
UV := $(or $(shell command -v uv 2>/dev/null),$(CURDIR)/.tools/bin/uv)
RUN := $(UV) run --frozen

.PHONY: install browser run api worker scheduler migrate test fuzz lint format assets bench clean

# uv itself comes from PyPI into .tools/ when the machine has none.
$(CURDIR)/.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/pip install --quiet "uv==$(UV_VERSION)"

install: $(UV)
	$(UV) sync --frozen

run: install
	$(RUN) guiju run

api: install
	$(RUN) guiju api

worker: install
	$(RUN) guiju worker

scheduler: install
	$(RUN) guiju scheduler

migrate: install
	$(RUN) guiju db upgrade

# Page tests drive Debian's Chromium (no browser is downloaded at run time); installed here when
# missing and the machine allows it, otherwise those tests skip and say why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } ; } || \
		echo "chromium is not installed and cannot be installed here: page tests will skip"

test: install browser
	$(RUN) pytest

# Schemathesis against the served OpenAPI document, on a fresh PostgreSQL database (tests/fuzz):
# fails on any 5xx or any response the document does not describe. GUIJU_FUZZ_EXAMPLES,
# GUIJU_FUZZ_SEED: see tests/fuzz/__main__.py.
fuzz: install
	$(RUN) python -m tests.fuzz

lint: install
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy
	$(RUN) lint-imports

# The pinned front-end packages (services/web/package-lock.json): installed with npm in a temporary
# directory and copied, with their licences, into services/web/static/vendor/, which is committed
# (serving needs no Node). Run after changing services/web/package.json.
assets: install
	$(RUN) python -m services.web.assets

format: install
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

# The bench has its own environment: its comparison engines never reach the app's or the tests'.
bench: install
	UV_PROJECT_ENVIRONMENT=.venv-bench $(UV) sync --frozen --group bench
	UV_PROJECT_ENVIRONMENT=.venv-bench $(RUN) --group bench python -m tests.bench

clean:
	rm -rf .venv .venv-bench .tools var .pytest_cache .mypy_cache .ruff_cache
