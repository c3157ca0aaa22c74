# The two commands a new user types are `make demo` and `make test`; both install first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The suite runs on SQLite and on this PostgreSQL; unreachable, its tests are skipped
# (CI sets REQUIRE_POSTGRES=1 so that they cannot be).
TEST_DATABASE_URL ?= postgresql+psycopg://postgres@127.0.0.1:5432/test

.PHONY: install demo test lint format openapi bench clean

# sim/ (the simulator and the demo) is its own distribution, a dev tool: installed here,
# editable, next to churn-ledger; `pip install .` and the Docker image leave it out.
$(STAMP): pyproject.toml sim/pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]' -e ./sim
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/churn-ledger demo

test: $(STAMP)
	TEST_DATABASE_URL="$(TEST_DATABASE_URL)" $(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

openapi: $(STAMP)
	$(BIN)/python -m service.openapi > openapi/openapi.json

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) data bench/results
