# One iteration: plan -> N x (generate -> evaluate -> repair ...) -> pg_final per PG
# -> final_round (finalists and incumbent re-timed side by side) -> select.
# LLM steps are local rules (the LLM servers are reachable from where Snakemake runs)
# that take no core (threads: 0: they wait on HTTP), capped only by the global resource
# llm_slots and the servers' own max_concurrency; evaluations and the final round are
# ordinary jobs (Slurm-able). Locally, evaluations overlap (up to --cores and
# timing_slots) while they build and validate, and a host-wide lock gives their timed
# calls, and the whole final round, the machine to themselves (hpcagents.timinglock).


# evaluate and final_round are local too: under Slurm their command only hands the step
# to the campaign's pilot job (one exclusive node) and waits; locally it is the step.
localrules:
    baseline,
    plan,
    generate,
    evaluate,
    pg_final,
    final_round,
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
        best=previous_best,
        previous=repair_inputs,
    output:
        source="results/{kernel}/iter{i}/pg{j}/attempt{a}/{kernel}.c",
        generation="results/{kernel}/iter{i}/pg{j}/attempt{a}/generation.json",
    log:
        "results/{kernel}/logs/iter{i}/pg{j}.attempt{a}.generate.log",
    wildcard_constraints:
        i="[1-9][0-9]*",
    threads: 0
    resources:
        llm_slots=1,
    params:
        cmd=step("generate"),
        previous=lambda wc, input: (
            f"--previous {Path(input.previous[0]).parent}" if input.previous else ""
        ),
    shell:
        "{params.cmd} --kernel {wildcards.kernel}"
        " --iteration {wildcards.i} --pg {wildcards.j} --attempt {wildcards.a}"
        " --plan {input.plan} --best {input.best} {params.previous}"
        " --out-dir results/{wildcards.kernel}/iter{wildcards.i}/pg{wildcards.j}/attempt{wildcards.a}"
        " > {log} 2>&1"


checkpoint evaluate:
    input:
        source="results/{kernel}/iter{i}/pg{j}/attempt{a}/{kernel}.c",
        generation="results/{kernel}/iter{i}/pg{j}/attempt{a}/generation.json",
    output:
        "results/{kernel}/iter{i}/pg{j}/attempt{a}/evaluation.json",
    log:
        "results/{kernel}/logs/iter{i}/pg{j}.attempt{a}.evaluate.log",
    # Under Slurm the command hands the evaluation to the campaign's pilot job, which
    # runs evaluations one after another on one exclusive node (common.smk timing_step).
    resources:
        timing_slots=timing_slots,
    params:
        cmd=timing_step("evaluate-attempt"),
    shell:
        "{params.cmd} --kernel {wildcards.kernel}"
        " --attempt-dir results/{wildcards.kernel}/iter{wildcards.i}/pg{wildcards.j}/attempt{wildcards.a}"
        " > {log} 2>&1"


rule pg_final:
    input:
        pg_final_inputs,
    output:
        "results/{kernel}/iter{i}/pg{j}/final.json",
    log:
        "results/{kernel}/logs/iter{i}/pg{j}.final.log",
    threads: 0
    params:
        cmd=step("pg-final"),
    shell:
        "{params.cmd} --kernel {wildcards.kernel} --evaluation {input}"
        " --out {output} > {log} 2>&1"


rule final_round:
    input:
        finals=pg_finals,
        previous=previous_best,
    output:
        "results/{kernel}/iter{i}/final_round.json",
    log:
        "results/{kernel}/logs/iter{i}/final_round.log",
    wildcard_constraints:
        i="[1-9][0-9]*",
    resources:
        timing_slots=timing_slots,
    params:
        cmd=timing_step("final-round"),
    shell:
        "{params.cmd} --kernel {wildcards.kernel} --iteration {wildcards.i}"
        " --finals {input.finals} --previous {input.previous} --out {output} > {log} 2>&1"


rule select:
    input:
        finals=pg_finals,
        final_round=final_round_input,
        previous=previous_best,
    output:
        best="results/{kernel}/iter{i}/best.json",
        source="results/{kernel}/iter{i}/best/{kernel}.c",
    log:
        "results/{kernel}/logs/iter{i}/select.log",
    threads: 0
    params:
        cmd=step("select"),
        previous=lambda wc, input: (
            f"--previous {input.previous}" if input.previous else ""
        ),
        final_round=lambda wc, input: (
            f"--final-round {input.final_round}" if input.final_round else ""
        ),
    shell:
        "{params.cmd} --kernel {wildcards.kernel} --iteration {wildcards.i}"
        " --finals {input.finals} {params.previous} {params.final_round}"
        " --out-dir results/{wildcards.kernel}/iter{wildcards.i} > {log} 2>&1"
