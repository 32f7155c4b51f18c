"""One iteration's steps (baseline, plan, generate, evaluate, final round, select), the archive
of elites and the Snakemake-side support.
"""
