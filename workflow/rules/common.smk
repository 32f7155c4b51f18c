# Config validation, shared paths and the input functions of the iteration DAG.
import json
import shlex
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "workflow"))

from snakemake.exceptions import IncompleteCheckpointException, WorkflowError

from hpcagents.campaign.repair import ends_chain
from hpcagents.core.layout import CampaignLayout
from hpcagents.spec.config import ConfigError
from hpcagents.spec.kernelspec import find_kernel
from hpcagents.campaign.workflow_support import (
    check_servers_or_die,
    guard_results,
    load_campaign,
    mark_current_config,
    record_results_settings,
    write_effective_config,
)

# Every path of the campaign comes from one layout (hpcagents.core.layout): LAYOUT is the
# results folder where Snakemake runs, K one kernel's folder with {kernel} as its name,
# so K.source("{i}", "{j}", "{a}") is the pattern results/{kernel}/iter{i}/pg{j}/...
LAYOUT = CampaignLayout()
K = LAYOUT.kernel("{kernel}")


def path(p):
    """A layout path as the string a rule's input/output/log wants."""
    return str(p)


def stop_on(check, *args):
    """Run a check of the package; its ConfigError stops the workflow with that message
    (the package never imports snakemake, so the Snakefile makes it a WorkflowError)."""
    try:
        return check(*args)
    except ConfigError as exc:
        raise WorkflowError(str(exc)) from None


# Validate the config before any job exists: a schema error names the key.
CFG = stop_on(load_campaign, config)
KERNELS = list(CFG.kernels)
# Stop before any job when results/ was made under other figure settings (bench size,
# repeats, flags, reference, kernel spec), unless the run accepts the change.
stop_on(guard_results, CFG, LAYOUT.root)
MAX_REPAIRS = CFG.max_repairs
# The effective (validated, overridden) config the steps read, with every kernel spec it
# uses frozen (hpcagents.spec.effective), named by its content
# (results/.hpcagents/config-<hash>.json) and never rewritten: a dry run or a second
# campaign with another config writes another file, so nothing can change what a
# running campaign's jobs read. It is deliberately not an input of any rule, so
# changing e.g. the number of iterations never reruns LLM calls.
EFFECTIVE = write_effective_config(CFG, LAYOUT)


def step(name):
    """Command line of one package step: the Python that runs Snakemake (the project's
    venv) and the effective config. Rules pass it as a param, so the lint is satisfied
    and the shell commands stay one line each."""
    return f"{sys.executable} -m hpcagents {name} --config {EFFECTIVE}"


# ---- Slurm: timing steps go through the campaign's pilot pool (hpcagents/cluster/pilot.py) ----
# Under the slurm executor, evaluate and select are local rules whose timing command hands
# the step (an evaluation, the final round) to the campaign's pool of pilot jobs: up to
# max_timing_nodes exclusive one-node jobs, each running steps one after another, grown
# while steps are queued and leaving when idle (a submission per evaluation costs far
# more than the evaluation; see the README, "On a Slurm cluster").
# Under the local executor the command is the step itself, unchanged.
PILOT_DIR = path(LAYOUT.pilot())


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
    pilot pool with the rule's Slurm resources (from profiles/slurm) as the pilots' request.
    """

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
            ("max_timing_nodes", "--max-nodes"),
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
    under Slurm the pilots run them, so the waiting hand-over jobs take no slot."""
    return 0 if under_slurm() else 1


def timing_threads(wildcards):
    """Under Slurm a timing rule only waits for its pilot: it takes no local core, so
    the login node's core count never caps how many steps the pool gets at once."""
    return 0 if under_slurm() else 1


def stop_pilot():
    """onsuccess/onerror: the campaign's pilots leave their nodes as soon as it is done."""
    if under_slurm():
        from hpcagents.cluster.pilot import stop

        jobs = stop(Path(PILOT_DIR))
        if jobs:
            print(
                f"hpcagents: stopped the evaluation pilots (Slurm jobs {', '.join(jobs)})"
            )


def baseline_source(wildcards):
    """The kernel's own baseline, in its folder (the campaign's kernels_dir or the
    built-in kernels/ beside the workflow), never in the working directory."""
    return str(
        find_kernel(wildcards.kernel, CFG.kernel_search) / f"{wildcards.kernel}.c"
    )


def previous_best(wildcards):
    """best.json of the iteration before (none for iteration 0)."""
    i = int(wildcards.i)
    return [path(LAYOUT.kernel(wildcards.kernel).best(i - 1))] if i > 0 else []


def previous_archive(wildcards):
    """archive.json of the iteration before: the elites the PM (and PGs) are shown."""
    i = int(wildcards.i)
    return [path(LAYOUT.kernel(wildcards.kernel).archive(i - 1))] if i > 0 else []


def failed_attempt(wildcards):
    """What a repair reads: the failed attempt before it (its error, source and answer)."""
    k, a = LAYOUT.kernel(wildcards.kernel), int(wildcards.a) - 1
    return {
        "failed_evaluation": path(k.evaluation(wildcards.i, wildcards.j, a)),
        "failed_generation": path(k.generation(wildcards.i, wildcards.j, a)),
        "failed_source": path(k.source(wildcards.i, wildcards.j, a)),
    }


def walk_chain(kernel, i, j):
    """The evaluation that ends PG j's repair chain (hpcagents.campaign.repair.ends_chain: the
    first attempt that passed, or the last one allowed). While the chain is unfinished,
    the checkpoint target of its current attempt (what Snakemake itself would put in the
    DAG for the exception)."""
    a = 0
    while True:
        try:
            job = checkpoints.evaluate.get(kernel=kernel, i=str(i), j=str(j), a=str(a))
        except IncompleteCheckpointException as unfinished:
            return unfinished.targetfile
        evaluation = job.output[0]
        with open(evaluation) as fh:
            status = json.load(fh)["status"]
        if ends_chain(i, a, status, MAX_REPAIRS):
            return evaluation
        a += 1


def final_evaluations(wildcards):
    """One evaluation per PG of the iteration: the end of each PG's chain.

    Every PG's walk stops at its own unfinished attempt instead of the whole function
    raising at the first one, so all N chains are in the DAG at once and each advances
    on its own: when any of their evaluations finishes, Snakemake re-evaluates this
    function (the job depends on that checkpoint). A repair job exists only after a
    failed attempt: an attempt after a passed one is never asked for."""
    i = int(wildcards.i)
    pgs = [0] if i == 0 else range(1, CFG.pgs + 1)
    return [walk_chain(wildcards.kernel, i, j) for j in pgs]


def all_bests(wildcards):
    k = LAYOUT.kernel(wildcards.kernel)
    return [path(k.best(i)) for i in range(CFG.iterations + 1)]


onsuccess:
    stop_pilot()


onerror:
    stop_pilot()
