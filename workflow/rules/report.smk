# Campaign view per kernel: summary.json (schema-validated) and a Markdown report.


localrules:
    summary,


rule summary:
    input:
        all_bests,
    output:
        summary="results/{kernel}/summary.json",
        report="results/{kernel}/report.md",
    log:
        "results/{kernel}/logs/summary.log",
    params:
        cmd=step("summary"),
    shell:
        "{params.cmd} --kernel {wildcards.kernel}"
        " --kernel-dir results/{wildcards.kernel}"
        " --out {output.summary} --report {output.report} > {log} 2>&1"
