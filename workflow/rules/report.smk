# Campaign view per kernel: summary.json (schema-validated), a Markdown report and a
# self-contained HTML report (plots embedded; drawn from summary.json and the artifacts).


localrules:
    summary,


rule summary:
    input:
        all_bests,
    output:
        summary=path(K.summary()),
        report=path(K.report_md()),
        html=report(
            path(K.report_html()),
            category="Campaign report",
            labels={"kernel": "{kernel}"},
        ),
    log:
        path(K.log(None, "summary")),
    params:
        cmd=step("summary"),
        html=f"{sys.executable} -m hpcagents report",
        kernel_dir=path(K.directory),
    shell:
        "{params.cmd} --kernel {wildcards.kernel} --kernel-dir {params.kernel_dir}"
        " --bests {input} --out {output.summary} --report {output.report} > {log} 2>&1"
        " && {params.html} --kernel-dir {params.kernel_dir}"
        " --out {output.html} >> {log} 2>&1"
