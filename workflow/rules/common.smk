# Config validation, shared paths and the input functions of the iteration DAG.
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))

from snakemake.exceptions import WorkflowError

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


# ---- Slurm: timing steps go through the campaign's pilot job (hpcagents/pilot.py) ----
# Under the slurm executor, evaluate and final_round are local rules whose command hands
# the step to ONE exclusive pilot job that runs them one after another (a submission per
# evaluation costs far more than the evaluation; see the README, "On a Slurm cluster").
# Under the local executor the command is the step itself, unchanged.
PILOT_DIR = "results/.hpcagents/pilot"


def under_slurm():
    plugin = workflow.executor_plugin
    name = getattr(plugin, "name", None) if plugin is not None else None
    if name not in (None, "local", "dryrun", "touch", "slurm"):
        raise WorkflowError(
            f"executor {name!r}: hpcagents runs with the local executor or with "
            "--workflow-profile slurm (executor: slurm) only"
        )
    return name == "slurm"


def timing_step(name):
    """``params.cmd`` of a timing rule: the step, or under Slurm the step handed to the
    pilot with the rule's Slurm resources (from profiles/slurm) as the pilot's request."""

    def cmd(wildcards, resources):
        if not under_slurm():
            return step(name)
        get = lambda key: getattr(resources, key, None)
        opts = [f"--dir {PILOT_DIR}"]
        for key, flag in (
            ("slurm_partition", "--partition"),
            ("slurm_account", "--account"),
            ("cpus_per_task", "--cpus-per-task"),
            ("mem_mb", "--mem-mb"),
            ("runtime", "--runtime"),
            ("pilot_runtime", "--pilot-runtime"),
            ("pilot_idle_s", "--idle-s"),
        ):
            if get(key) not in (None, ""):
                opts.append(f"{flag} {shlex.quote(str(get(key)))}")
        if get("slurm_extra"):
            opts.append(shlex.quote(f"--slurm-extra={get('slurm_extra')}"))
        return (
            f"{sys.executable} -m hpcagents hand-over {' '.join(opts)} -- {step(name)}"
        )

    return cmd


def timing_slots(wildcards):
    """Locally, an evaluation takes one of the profile's timing_slots (they overlap while
    building and validating; the host-wide timing lock serialises their timed calls);
    under Slurm the pilot runs them one after another, so the waiting hand-over jobs take
    no slot."""
    return 0 if under_slurm() else 1


def stop_pilot():
    """onsuccess/onerror: the campaign's pilot leaves the node as soon as it is done."""
    if under_slurm():
        from hpcagents.pilot import stop

        job = stop(Path(PILOT_DIR))
        if job:
            print(f"hpcagents: stopped the evaluation pilot (Slurm job {job})")


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


onsuccess:
    stop_pilot()


onerror:
    stop_pilot()
