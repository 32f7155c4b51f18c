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
        source="results/{kernel}/iter0/pg0/attempt0/{kernel}.c",
        generation="results/{kernel}/iter0/pg0/attempt0/generation.json",
    log:
        "results/{kernel}/logs/iter0/baseline.log",
    params:
        cmd=step("baseline"),
    shell:
        "{params.cmd} --kernel {wildcards.kernel}"
        " --out-dir results/{wildcards.kernel}/iter0/pg0/attempt0 > {log} 2>&1"


rule plan:
    input:
        best=previous_best,
        archive=previous_archive,
    output:
        "results/{kernel}/iter{i}/plan.json",
    log:
        "results/{kernel}/logs/iter{i}/plan.log",
    wildcard_constraints:
        i="[1-9][0-9]*",
    threads: 0
    resources:
        llm_slots=1,
    params:
        cmd=step("plan"),
    shell:
        "{params.cmd} --kernel {wildcards.kernel}"
        " --iteration {wildcards.i} --best {input.best} --out {output} > {log} 2>&1"


rule generate:
    input:
        plan="results/{kernel}/iter{i}/plan.json",
    output:
        source="results/{kernel}/iter{i}/pg{j}/attempt{a}/{kernel}.c",
        generation="results/{kernel}/iter{i}/pg{j}/attempt{a}/generation.json",
    log:
        "results/{kernel}/logs/iter{i}/pg{j}.attempt{a}.generate.log",
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
        " --attempt 0 --plan {input.plan} --out {output.generation}"
        " > {log} 2>&1"


# A repair exists only after a failed attempt (the checkpoint walk in common.smk asks for
# it): the same PG again, with the failed source and its exact error in the prompt.
rule repair:
    input:
        unpack(failed_attempt),
        plan="results/{kernel}/iter{i}/plan.json",
    output:
        source="results/{kernel}/iter{i}/pg{j}/attempt{a}/{kernel}.c",
        generation="results/{kernel}/iter{i}/pg{j}/attempt{a}/generation.json",
    log:
        "results/{kernel}/logs/iter{i}/pg{j}.attempt{a}.repair.log",
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
        " --previous {input.failed_evaluation} --out {output.generation} > {log} 2>&1"


checkpoint evaluate:
    input:
        source="results/{kernel}/iter{i}/pg{j}/attempt{a}/{kernel}.c",
        generation="results/{kernel}/iter{i}/pg{j}/attempt{a}/generation.json",
    output:
        "results/{kernel}/iter{i}/pg{j}/attempt{a}/evaluation.json",
    log:
        "results/{kernel}/logs/iter{i}/pg{j}.attempt{a}.evaluate.log",
    # Under Slurm the command hands the evaluation to the campaign's pilot pool: each
    # pilot runs evaluations one after another on its exclusive node (common.smk).
    threads: timing_threads
    resources:
        timing_slots=timing_slots,
    params:
        cmd=timing_step("evaluate-attempt"),
    shell:
        "{params.cmd} --kernel {wildcards.kernel} --out {output} > {log} 2>&1"


# The baseline is the campaign's reference point: nothing to re-time or compare.
rule select_baseline:
    input:
        "results/{kernel}/iter0/pg0/attempt0/evaluation.json",
    output:
        best="results/{kernel}/iter0/best.json",
        source="results/{kernel}/iter0/best/{kernel}.c",
        archive="results/{kernel}/iter0/archive.json",
    log:
        "results/{kernel}/logs/iter0/select.log",
    threads: 0
    params:
        cmd=step("select"),
    shell:
        "{params.cmd} --kernel {wildcards.kernel} --iteration 0 --finals {input}"
        " --out {output.best} > {log} 2>&1"


# Selection after the baseline, in one job: the final round re-times the finalists among
# the PGs' chain ends and the incumbent side by side (a timing step: under Slurm it goes
# to one pilot of the pool, so all its contenders share one node), then the decision,
# made on those figures alone, writes best.json.
rule select:
    input:
        evaluations=final_evaluations,
        previous=previous_best,
    output:
        final_round="results/{kernel}/iter{i}/final_round.json",
        best="results/{kernel}/iter{i}/best.json",
        source="results/{kernel}/iter{i}/best/{kernel}.c",
        archive="results/{kernel}/iter{i}/archive.json",
    log:
        final_round="results/{kernel}/logs/iter{i}/final_round.log",
        select="results/{kernel}/logs/iter{i}/select.log",
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
        " --out {output.best} > {log.select} 2>&1"
