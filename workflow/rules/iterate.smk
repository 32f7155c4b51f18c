# One iteration: plan -> N x (generate -> evaluate -> repair ...) -> select (the
# finalists among the PGs' chain ends and the incumbent re-timed side by side, then the
# decision).
# LLM steps (plan, generate, repair) take no core (threads: 0: they wait on HTTP), capped
# only by the global resource llm_slots and the servers' own max_concurrency. Locally,
# evaluations overlap (up to timing_slots) while they build and validate, and a host-wide
# lock gives their timed calls, and the whole final round, the machine to themselves
# (hpcagents.judge.timinglock).


# Every rule is local: the LLM servers are reachable from where Snakemake runs, and under
# Slurm the timing steps (evaluate, the final round of select) only hand their work to
# the campaign's pilot pool (up to max_timing_nodes exclusive nodes) and wait; locally
# they are the step.
localrules:
    baseline,
    plan,
    generate,
    repair,
    evaluate,
    select_baseline,
    select,


rule baseline:
    input:
        baseline_source,
    output:
        source=path(K.source(0, 0, 0)),
        generation=path(K.generation(0, 0, 0)),
    log:
        path(K.log(0, "baseline")),
    params:
        cmd=step("baseline"),
    shell:
        "{params.cmd} --kernel {wildcards.kernel} --baseline {input}"
        " --source {output.source} --out {output.generation} > {log} 2>&1"


rule plan:
    input:
        best=previous_best,
        archive=previous_archive,
    output:
        path(K.plan("{i}")),
    log:
        path(K.log("{i}", "plan")),
    wildcard_constraints:
        i="[1-9][0-9]*",
    threads: 0
    resources:
        llm_slots=1,
    params:
        cmd=step("plan"),
    shell:
        "{params.cmd} --kernel {wildcards.kernel} --iteration {wildcards.i}"
        " --best {input.best} --archive {input.archive} --out {output} > {log} 2>&1"


rule generate:
    input:
        plan=path(K.plan("{i}")),
    output:
        source=path(K.source("{i}", "{j}", "{a}")),
        generation=path(K.generation("{i}", "{j}", "{a}")),
    log:
        path(K.attempt_log("{i}", "{j}", "{a}", "generate")),
    wildcard_constraints:
        i="[1-9][0-9]*",
        a="0",
    threads: 0
    resources:
        llm_slots=1,
    params:
        cmd=step("generate"),
    shell:
        "{params.cmd} --kernel {wildcards.kernel} --iteration {wildcards.i} --pg {wildcards.j}"
        " --attempt 0 --plan {input.plan}"
        " --source {output.source} --out {output.generation} > {log} 2>&1"


# A repair exists only after a failed attempt (the checkpoint walk in common.smk asks for
# it): the same PG again, with the failed source and its exact error in the prompt.
rule repair:
    input:
        unpack(failed_attempt),
        plan=path(K.plan("{i}")),
    output:
        source=path(K.source("{i}", "{j}", "{a}")),
        generation=path(K.generation("{i}", "{j}", "{a}")),
    log:
        path(K.attempt_log("{i}", "{j}", "{a}", "repair")),
    wildcard_constraints:
        i="[1-9][0-9]*",
        a="[1-9][0-9]*",
    threads: 0
    resources:
        llm_slots=1,
    params:
        cmd=step("generate"),
    shell:
        "{params.cmd} --kernel {wildcards.kernel} --iteration {wildcards.i} --pg {wildcards.j}"
        " --attempt {wildcards.a} --plan {input.plan}"
        " --failed-evaluation {input.failed_evaluation}"
        " --failed-generation {input.failed_generation}"
        " --failed-source {input.failed_source}"
        " --source {output.source} --out {output.generation} > {log} 2>&1"


checkpoint evaluate:
    input:
        source=path(K.source("{i}", "{j}", "{a}")),
        generation=path(K.generation("{i}", "{j}", "{a}")),
    output:
        path(K.evaluation("{i}", "{j}", "{a}")),
    log:
        path(K.attempt_log("{i}", "{j}", "{a}", "evaluate")),
    # Under Slurm the command hands the evaluation to the campaign's pilot pool: each
    # pilot runs evaluations one after another on its exclusive node (common.smk).
    threads: timing_threads
    resources:
        timing_slots=timing_slots,
    params:
        cmd=timing_step("evaluate-attempt"),
    shell:
        "{params.cmd} --kernel {wildcards.kernel} --source {input.source}"
        " --generation {input.generation} --out {output} > {log} 2>&1"


# The baseline is the campaign's reference point: nothing to re-time or compare.
rule select_baseline:
    input:
        path(K.evaluation(0, 0, 0)),
    output:
        best=path(K.best(0)),
        source=path(K.best_source(0)),
        archive=path(K.archive(0)),
    log:
        path(K.log(0, "select")),
    threads: 0
    params:
        cmd=step("select"),
    shell:
        "{params.cmd} --kernel {wildcards.kernel} --iteration 0 --finals {input}"
        " --out {output.best} --best-source {output.source} --archive {output.archive}"
        " > {log} 2>&1"


# Selection after the baseline, in one job: the final round re-times the finalists among
# the PGs' chain ends and the incumbent side by side (a timing step: under Slurm it goes
# to one pilot of the pool, so all its contenders share one node), then the decision,
# made on those figures alone, writes best.json, the selected source and the archive.
rule select:
    input:
        evaluations=final_evaluations,
        previous=previous_best,
        previous_archive=previous_archive,
    output:
        final_round=path(K.final_round("{i}")),
        best=path(K.best("{i}")),
        source=path(K.best_source("{i}")),
        archive=path(K.archive("{i}")),
    log:
        final_round=path(K.log("{i}", "final_round")),
        select=path(K.log("{i}", "select")),
    wildcard_constraints:
        i="[1-9][0-9]*",
    threads: timing_threads
    resources:
        timing_slots=timing_slots,
    params:
        final_round=timing_step("final-round"),
        select=step("select"),
    shell:
        "{params.final_round} --kernel {wildcards.kernel} --iteration {wildcards.i}"
        " --evaluations {input.evaluations} --previous {input.previous}"
        " --out {output.final_round} > {log.final_round} 2>&1"
        " && {params.select} --kernel {wildcards.kernel} --iteration {wildcards.i}"
        " --final-round {output.final_round} --previous {input.previous}"
        " --previous-archive {input.previous_archive}"
        " --out {output.best} --best-source {output.source} --archive {output.archive}"
        " > {log.select} 2>&1"
