# Campaign view per kernel: summary.json (schema-validated), a Markdown report and a
# self-contained HTML report (plots embedded; drawn from summary.json and the artifacts).


localrules:
    summary,


rule summary:
    input:
        all_bests,
    output:
        summary="results/{kernel}/summary.json",
        report="results/{kernel}/report.md",
        html=report(
            "results/{kernel}/report.html",
            category="Campaign report",
            labels={"kernel": "{kernel}"},
        ),
    log:
        "results/{kernel}/logs/summary.log",
    params:
        cmd=step("summary"),
        html=f"{sys.executable} -m hpcagents report",
    shell:
        "{params.cmd} --kernel {wildcards.kernel}"
        " --kernel-dir results/{wildcards.kernel}"
        " --out {output.summary} --report {output.report} > {log} 2>&1"
        " && {params.html} --kernel-dir results/{wildcards.kernel}"
        " --out {output.html} >> {log} 2>&1"
