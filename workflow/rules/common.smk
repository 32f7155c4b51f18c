# Config validation, shared paths and the input functions of the iteration DAG.
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))

from hpcagents.workflow_support import (
    check_servers_or_die,
    load_campaign,
    mark_current_config,
    write_effective_config,
)

# Validate the config before any job exists: a schema error names the key.
CFG = load_campaign(config)
KERNELS = list(CFG.kernels)
MAX_REPAIRS = CFG.max_repairs
# The effective (validated, overridden) config the steps read, named by its content
# (results/.hpcagents/config-<hash>.json) and never rewritten: a dry run or a second
# campaign with another config writes another file, so nothing can change what a
# running campaign's jobs read. It is deliberately not an input of any rule, so
# changing e.g. the number of iterations never reruns LLM calls.
EFFECTIVE = write_effective_config(CFG, "results/.hpcagents")


def step(name):
    """Command line of one package step: the Python that runs Snakemake (the project's
    venv) and the effective config. Rules pass it as a param, so the lint is satisfied
    and the shell commands stay one line each."""
    return f"{sys.executable} -m hpcagents {name} --config {EFFECTIVE}"


def baseline_source(wildcards):
    """The kernel's own baseline, beside the workflow (not the working directory)."""
    return str(
        Path(workflow.basedir) / "kernels" / wildcards.kernel / f"{wildcards.kernel}.c"
    )


def attempt_dir(kernel, i, j, a):
    return f"results/{kernel}/iter{i}/pg{j}/attempt{a}"


def previous_best(wildcards):
    """best.json of the iteration before (none for iteration 0)."""
    i = int(wildcards.i)
    return [f"results/{wildcards.kernel}/iter{i - 1}/best.json"] if i > 0 else []


def repair_inputs(wildcards):
    """A repair attempt reads the failed attempt before it; attempt 0 reads nothing."""
    a = int(wildcards.a)
    if a == 0:
        return []
    prev = attempt_dir(wildcards.kernel, wildcards.i, wildcards.j, a - 1)
    return [
        f"{prev}/evaluation.json",
        f"{prev}/generation.json",
        f"{prev}/{wildcards.kernel}.c",
    ]


def pg_final_inputs(wildcards):
    """The final evaluation of ONE PG, walking its attempts through the checkpoint: the
    first that passed, or the last one allowed.

    Each PG has its own ``pg_final`` job whose input function raises its own incomplete-
    checkpoint exception, so every PG's chain advances on its own and all N first attempts
    are in the DAG as soon as the plan is (a walk over all PGs in one input function
    would stop at the first unfinished PG and serialise them). An attempt after a passed
    one is never asked for, so no job exists for a repair that is not needed."""
    kernel, i, j = wildcards.kernel, int(wildcards.i), wildcards.j
    a = 0
    while True:
        path = checkpoints.evaluate.get(kernel=kernel, i=str(i), j=j, a=str(a)).output[
            0
        ]
        if i == 0 or a >= MAX_REPAIRS:
            return path
        with open(path) as fh:
            if json.load(fh)["status"] == "ok":
                return path
        a += 1


def pg_finals(wildcards):
    """One final.json per PG of the iteration (pg0 alone for the baseline)."""
    i = int(wildcards.i)
    pgs = [0] if i == 0 else range(1, CFG.pgs + 1)
    return [f"results/{wildcards.kernel}/iter{i}/pg{j}/final.json" for j in pgs]


def final_round_input(wildcards):
    """The side-by-side re-timing of the finalists; the baseline (iteration 0) has none."""
    i = int(wildcards.i)
    return [f"results/{wildcards.kernel}/iter{i}/final_round.json"] if i > 0 else []


def all_bests(wildcards):
    return [
        f"results/{wildcards.kernel}/iter{i}/best.json"
        for i in range(CFG.iterations + 1)
    ]
