# One iteration: plan -> generate (N PGs) -> evaluate -> repair -> select.
# LLM steps are local rules (the LLM servers are reachable from where Snakemake runs),
# capped by the global resource llm_slots; evaluation is an ordinary job (Slurm-able),
# serialised locally by timing_slots so two timings never share the cores.


localrules:
    baseline,
    plan,
    generate,
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
    resources:
        timing_slots=1,
    params:
        cmd=step("evaluate-attempt"),
    shell:
        "{params.cmd} --kernel {wildcards.kernel}"
        " --attempt-dir results/{wildcards.kernel}/iter{wildcards.i}/pg{wildcards.j}/attempt{wildcards.a}"
        " > {log} 2>&1"


rule select:
    input:
        candidates=select_candidates,
        previous=previous_best,
    output:
        best="results/{kernel}/iter{i}/best.json",
        source="results/{kernel}/iter{i}/best/{kernel}.c",
    log:
        "results/{kernel}/logs/iter{i}/select.log",
    params:
        cmd=step("select"),
        previous=lambda wc, input: (
            f"--previous {input.previous}" if input.previous else ""
        ),
    shell:
        "{params.cmd} --kernel {wildcards.kernel}"
        " --iteration {wildcards.i} --candidates {input.candidates} {params.previous}"
        " --out-dir results/{wildcards.kernel}/iter{wildcards.i} > {log} 2>&1"
