# Posture: `make run` (collector + local agent, end to end) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup run test lint typecheck protos clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[agent,collector,postgres,dev]'
	touch $@

setup: $(VENV)/.installed

run: setup
	$(BIN)/posture-collector quickstart --dir .posture

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest

protos: setup
	$(BIN)/python -m protos.generate

clean:
	rm -rf $(VENV) .posture
