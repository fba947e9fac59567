# The two commands a newcomer types: `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

# Tests use their own PostgreSQL database and Redis databases, never the ones `make run` uses.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/marketplace
TEST_BROKER_URL ?= redis://127.0.0.1:6379/14
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
# Benchmarks have Redis databases of their own: a benchmark run beside the suite never flushes its broker.
BENCH_BROKER_URL ?= redis://127.0.0.1:6379/10
BENCH_REDIS_URL ?= redis://127.0.0.1:6379/11
TEST_ENV := DJANGO_SETTINGS_MODULE=config.settings.test DATABASE_URL=$(TEST_DATABASE_URL) \
	CELERY_BROKER_URL=$(TEST_BROKER_URL) REDIS_URL=$(TEST_REDIS_URL)
PYTEST_ARGS ?=
# The smoke suite (tests/smoke) runs `make run`'s configuration: local settings on SQLite
# (in memory), with Redis databases of its own (config/settings/smoke/test.py says what differs).
SMOKE_BROKER_URL ?= redis://127.0.0.1:6379/12
SMOKE_REDIS_URL ?= redis://127.0.0.1:6379/13
SMOKE_ENV := DJANGO_SETTINGS_MODULE=config.settings.smoke.test DATABASE_URL=sqlite:///:memory: \
	CELERY_BROKER_URL=$(SMOKE_BROKER_URL) REDIS_URL=$(SMOKE_REDIS_URL)
SMOKE_PYTEST_ARGS ?=
TYPED_PACKAGES := core notifications payments logistics maintenance config

.PHONY: run test checks bench faults lint docs install install-dev services clean screenshots

$(VENV)/bin/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || \
		{ echo "Python 3.11+ is needed as $(PYTHON) (or: make PYTHON=python3.11 ...)"; exit 1; }
	@$(PYTHON) -m venv $(VENV) || { echo "Could not create $(VENV): install python3-venv (Debian: apt-get install python3-venv)"; exit 1; }
	$(PIP) install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt | $(VENV)/bin/python
	$(PIP) install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements.txt requirements-dev.txt | $(VENV)/bin/python
	$(PIP) install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

## make run: install, migrate, schedules, demo data, admin user; then web :8000, worker, beat, Flower :5555
run: install
	@$(PY) scripts/bootstrap_env.py
	@$(PY) scripts/run.py services
	$(PY) manage.py migrate --noinput
	$(PY) manage.py jobs setup
	$(PY) manage.py ensure_admin
	$(PY) manage.py load_demo_data
	@echo "Starting web http://127.0.0.1:8000/admin/  API http://127.0.0.1:8000/api/v1/docs/  Flower http://127.0.0.1:5555/"
	@$(PY) scripts/run.py start

## make test: install dev requirements, start PostgreSQL and Redis if needed, then the checks, the whole suite (PostgreSQL) and the SQLite smoke suite
test: install-dev
	@CELERY_BROKER_URL=$(TEST_BROKER_URL) DATABASE_URL=$(TEST_DATABASE_URL) scripts/ensure_services.sh redis postgres
	@scripts/ensure_browser.sh
	$(MAKE) --no-print-directory checks
	$(TEST_ENV) $(VENV)/bin/pytest $(PYTEST_ARGS)
	$(SMOKE_ENV) $(VENV)/bin/pytest tests/smoke -p no:cacheprovider $(SMOKE_PYTEST_ARGS)

## make checks: lint, format, import contracts (.importlinter) and strict mypy; part of make test
checks: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(TEST_ENV) $(VENV)/bin/mypy $(TYPED_PACKAGES)

## make bench: the benchmarks in tests/benchmarks against PostgreSQL
bench: install-dev
	@CELERY_BROKER_URL=$(TEST_BROKER_URL) DATABASE_URL=$(TEST_DATABASE_URL) scripts/ensure_services.sh redis postgres
	$(TEST_ENV) CELERY_BROKER_URL=$(BENCH_BROKER_URL) REDIS_URL=$(BENCH_REDIS_URL) $(PY) -m tests.benchmarks

## make screenshots: the browser tests (tests/browser) again, saving PNGs of the admin pages into docs/images/
screenshots: install-dev
	@CELERY_BROKER_URL=$(TEST_BROKER_URL) DATABASE_URL=$(TEST_DATABASE_URL) scripts/ensure_services.sh redis postgres
	@scripts/ensure_browser.sh
	$(TEST_ENV) BROWSER_SCREENSHOTS=docs/images $(VENV)/bin/pytest tests/browser -m browser -p no:cacheprovider $(PYTEST_ARGS)

## make faults: the fault-injection harness, about 300 trials (15-20 min); writes docs/reliability.md
faults: install-dev
	@CELERY_BROKER_URL=$(TEST_BROKER_URL) DATABASE_URL=$(TEST_DATABASE_URL) scripts/ensure_services.sh redis postgres
	DATABASE_URL=$(TEST_DATABASE_URL) $(PY) -m tests.faults

lint: checks

## make docs: regenerate docs/jobs.md from the catalog
docs: install
	DJANGO_SETTINGS_MODULE=config.settings.test $(PY) manage.py jobs list --format markdown > docs/jobs.md.tmp
	mv docs/jobs.md.tmp docs/jobs.md

clean:
	rm -rf $(VENV) .make db.sqlite3 staticfiles
