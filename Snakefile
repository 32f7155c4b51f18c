# hpcagents: a team of local-LLM agents that optimises HPC kernels, one Snakemake DAG per
# iteration: plan -> N x generate -> evaluate (compile, validate, time) -> repair -> select.
# The logic lives in the Python package workflow/hpcagents/; rules only wire it.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"


wildcard_constraints:
    kernel="[A-Za-z0-9_-]+",
    i="[0-9]+",
    j="[0-9]+",
    a="[0-9]+",


# Stop before any job when no LLM server answers (skipped for offline replay); record
# which effective config this run uses (a dry run never gets here).
onstart:
    stop_on(check_servers_or_die, CFG)
    mark_current_config(EFFECTIVE)
    record_results_settings(CFG)


include: "workflow/rules/iterate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        expand(path(K.summary()), kernel=KERNELS),
