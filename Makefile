# Two commands set up and run everything on a fresh machine:
#   make demo   # venv + install, scripted model, 3 iterations x 4 PGs on dgemm, summary table
#   make test   # venv + install, the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean-results

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	touch $@

demo: $(STAMP)
	$(VENV)/bin/hpcagents demo

test: $(STAMP)
	$(VENV)/bin/pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check workflow tests
	$(VENV)/bin/ruff format --check workflow tests
	$(VENV)/bin/snakefmt --check Snakefile workflow/rules
	$(VENV)/bin/snakemake --lint || echo "(only the declined conda-environment finding is expected: see README)"

clean-results:
	rm -rf results .snakemake
