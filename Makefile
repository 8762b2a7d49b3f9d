# newstagger developer commands. `make demo` and `make test` each set up everything they need.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test lint typecheck unit integration image image-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# the runtime and the embedded broker only (no development toolchain)
$(BIN)/.demo-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[demo]"
	touch $@

# everything `make test` needs
$(BIN)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

## demo: the whole product on the embedded default (local broker, default model, service, demo feed)
demo: $(BIN)/.demo-installed
	$(BIN)/newstagger demo

## test: lint, type checks, generated-code drift check, unit and integration tests (what CI runs)
test: $(BIN)/.installed lint typecheck
	$(BIN)/pytest -m "not image"

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python scripts/gen_protos.py --check

typecheck: $(BIN)/.installed
	$(BIN)/mypy

unit: $(BIN)/.installed
	$(BIN)/pytest tests/unit

integration: $(BIN)/.installed
	$(BIN)/pytest tests/integration

## image: build $(IMAGE) from the Dockerfile (docker if a daemon answers, else buildah; scripts/image.sh)
IMAGE ?= localhost/newstagger:dev
image: $(BIN)/.installed
	IMAGE=$(IMAGE) PIP=$(BIN)/pip scripts/image.sh

## image-test: build the image (cached) and run it as the chart does (tests/image, needs buildah)
image-test: $(BIN)/.installed
	NEWSTAGGER_IMAGE=$(IMAGE) $(BIN)/pytest -m image tests/image

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info .image
