"""hpcagents: local-LLM agents that optimise HPC kernels, as a Snakemake campaign."""

__version__ = "0.1.0"
