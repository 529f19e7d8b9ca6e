# Guiju: `make run` starts everything on a fresh machine; `make test` runs the tests.
SHELL := /bin/bash
UV_VERSION := 0.13.9
UV := $(or $(shell command -v uv 2>/dev/null),$(CURDIR)/.tools/bin/uv)
RUN := $(UV) run --frozen

.PHONY: install system-packages sandbox browser run api worker scheduler migrate test fuzz lint format messages assets bench clean

# uv itself comes from PyPI into .tools/ when the machine has none.
$(CURDIR)/.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/pip install --quiet "uv==$(UV_VERSION)"

install: $(UV)
	$(UV) sync --frozen

run: install sandbox
	$(RUN) guiju run

api: install
	$(RUN) guiju api

worker: install sandbox
	$(RUN) guiju worker

scheduler: install
	$(RUN) guiju scheduler

migrate: install
	$(RUN) guiju db upgrade

# Debian packages taken from the system, installed with apt-get when missing and the machine allows
# it (root), otherwise a line says what goes without:
# - bubblewrap confines the code of submitted plugins while their checks run; without it those
#   checks fail saying so (a submission's code never runs unconfined);
# - chromium is what the page tests drive (no browser is downloaded at run time); without it they skip;
#   fonts-wqy-microhei gives it Chinese glyphs for the pages' screenshots.
APT_INSTALL := apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq
CAN_APT := [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1

system-packages: sandbox browser

sandbox:
	@command -v bwrap >/dev/null 2>&1 || { $(CAN_APT) && { $(APT_INSTALL) bubblewrap; } ; } || \
		echo "bubblewrap is not installed and cannot be installed here: submitted plugins will fail their checks"

browser:
	@command -v chromium >/dev/null 2>&1 || { $(CAN_APT) && { $(APT_INSTALL) chromium; } ; } || \
		echo "chromium is not installed and cannot be installed here: page tests will skip"
	@fc-list 2>/dev/null | grep -qi "wenquanyi\|noto sans cjk" || { $(CAN_APT) && { $(APT_INSTALL) fonts-wqy-microhei; } ; } || \
		echo "no Chinese font is installed and none can be installed here: screenshots show boxes for Chinese"

# One pytest worker per core; a module's tests stay on one worker, so a module's shared app or
# browser starts once. Coverage (lines and branches, subprocesses included) is reported at the end
# and fails the run under the floor in pyproject.toml.
test: install system-packages
	$(RUN) pytest -n auto --dist loadscope --cov --cov-report=term

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

# Every text marked for translation (translate(...), N_(...)) into the template, then into both
# catalogs; new entries come out empty, and a unit test fails until they are translated.
messages: install
	$(RUN) pybabel extract -F babel.cfg -k translate -k N_ -k _ --no-location --sort-output \
		--project guiju -o services/web/translations/messages.pot services tenants
	$(RUN) pybabel update -i services/web/translations/messages.pot -d services/web/translations \
		--no-fuzzy-matching

# The bench has its own environment: its comparison engines never reach the app's or the tests'.
bench: install
	UV_PROJECT_ENVIRONMENT=.venv-bench $(UV) sync --frozen --group bench
	UV_PROJECT_ENVIRONMENT=.venv-bench $(RUN) --group bench python -m tests.bench

clean:
	rm -rf .venv .venv-bench .tools var .pytest_cache .mypy_cache .ruff_cache
