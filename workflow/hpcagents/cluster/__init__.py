"""Where a campaign runs: ``hpcagents run`` (local or Slurm), the Slurm timing pilot, launched
LLM servers, campaigns started from Python.
"""
