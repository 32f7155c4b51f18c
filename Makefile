# Two commands set up and run everything on a fresh machine:
#   make demo   # venv + install, scripted model, 3 iterations x 4 PGs on dgemm, summary table
#   make test   # venv + install, the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean-results system-deps report status study suite

# Debian packages the tests use: bubblewrap (the candidate sandbox), slurm-wlm + munge (a
# real multi-node Slurm for the Slurm tests), chromium + chromium-driver (the HTML report
# opened in a real headless browser), clang + libomp-dev (the race check: ThreadSanitizer
# and LLVM's OpenMP race tool Archer). Installed when running as root; otherwise those
# tests skip and say why.
SYSTEM_PKGS := bubblewrap slurm-wlm munge chromium chromium-driver clang libomp-dev
system-deps:
	@missing=""; for p in $(SYSTEM_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "note: missing Debian packages:$$missing (their tests will be skipped)"; fi; \
	fi

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	touch $@

demo: $(STAMP)
	$(VENV)/bin/hpcagents demo

# The HTML report of results/ (written by every campaign too), and where a campaign is.
report: $(STAMP)
	$(VENV)/bin/hpcagents report --results results

status: $(STAMP)
	$(VENV)/bin/hpcagents status

# The seed's study: 1, 2, 4, 8 PGs x 3 repeats on the scripted model (stochastic mode),
# bench size 256 so it runs in minutes; results/study/study.{png,md,html,json}.
study: $(STAMP)
	$(VENV)/bin/hpcagents study --pgs 1,2,4,8 --repeats 3 --iterations 3 --bench-size 256

# The scripted campaign on every kernel folder that has a scripted/ set; one table.
suite: $(STAMP)
	$(VENV)/bin/hpcagents suite

# Two pytest-xdist workers: much of a campaign test is waiting (on LLM stand-ins, on
# Snakemake, on Slurm), so two overlap well even on 2 cores. Whole files go to a worker
# (a module's campaign or Slurm cluster is made once), in the order tests/conftest.py
# gives; tests marked `alone` run while no other test does; timed calls are ordered by
# the workflow's host-wide timing lock. One file or test: $(VENV)/bin/pytest -q tests/test_x.py -k name
test: $(STAMP) system-deps
	$(VENV)/bin/pytest -q -n 2 --dist loadfile --no-loadscope-reorder

lint: $(STAMP)
	$(VENV)/bin/ruff check workflow tests
	$(VENV)/bin/ruff format --check workflow tests
	$(VENV)/bin/snakefmt --check Snakefile workflow/rules
	$(VENV)/bin/snakemake --lint || echo "(only the declined conda-environment finding is expected: see README)"

clean-results:
	rm -rf results .snakemake
