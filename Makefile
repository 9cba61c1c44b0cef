# The two commands a new user and CI run: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test lint demo bench bench-parts clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# three workers: the pipeline tests mostly wait on their brokers (a private node each)
test: $(STAMP)
	$(BIN)/python -m pytest -n 3

lint: $(STAMP)
	$(BIN)/ruff check backbone adapters tests
	$(BIN)/ruff format --check backbone adapters tests
	$(BIN)/mypy

demo: $(STAMP)
	$(BIN)/backbone demo

bench: $(STAMP)
	$(BIN)/backbone bench

bench-parts: $(STAMP)
	$(BIN)/backbone bench parts

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
