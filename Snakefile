# hpcagents: a team of local-LLM agents that optimises HPC kernels, one Snakemake DAG per
# iteration: plan -> N x generate -> evaluate (compile, validate, time) -> repair -> select.
# The logic lives in the Python package workflow/hpcagents/; rules only wire it.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/iterate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        expand("results/{kernel}/summary.json", kernel=KERNELS),
