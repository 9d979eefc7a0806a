# The two commands of the README:
#   make run   - set up and start a working scheduler on the embedded defaults
#   make test  - set up and run the whole test suite (lint, SQLite, then PostgreSQL + RabbitMQ)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# Unit and API tests run in this many processes (pytest-xdist), each with its
# own test database; the integration tests run in two groups side by side, each
# on servers, dispatchers and workers of its own (tests/integration/conftest.py).
TEST_PROCESSES ?= 2

.PHONY: run test setup lint test-sqlite test-postgres clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || (apt-get install -y python3-venv && $(PYTHON) -m venv $(VENV))
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.base: requirements/base.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements/base.txt
	touch $@

$(VENV)/.dev: requirements/dev.txt requirements/base.txt | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements/dev.txt
	touch $@ $(VENV)/.base

setup: $(VENV)/.base

run: $(VENV)/.base
	$(BIN)/python manage.py runscheduler --host $(HOST) --port $(PORT)

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	DATABASE_URL= BROKER_URL= $(BIN)/python manage.py makemigrations --check --dry-run

# The unit and API suite on SQLite; the integration tests need the real servers.
test-sqlite: $(VENV)/.dev
	DATABASE_URL= BROKER_URL= $(BIN)/pytest -m "not integration" -n $(TEST_PROCESSES)

# Everything on a PostgreSQL that tests/services.py starts on a free port and
# stops at the end; the integration tests start their own PostgreSQL,
# RabbitMQ and Redis servers, dispatchers and workers. The browser tests are
# left to test-sqlite: they drive a server of their own on SQLite, whatever
# DATABASE_URL says, so a second run would test the same thing again.

test-postgres: $(VENV)/.dev
	$(BIN)/python -m tests.services --postgres -- $(BIN)/pytest -m "not integration" -n $(TEST_PROCESSES) \
		--ignore=tests/browser
	$(BIN)/python -m tests.services --postgres -- $(BIN)/pytest -m integration -n 2 --dist loadgroup

test: lint test-sqlite test-postgres

clean:
	rm -rf $(VENV) var
