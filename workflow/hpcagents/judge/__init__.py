"""The trusted judge: build, sandbox, run, check and time a candidate (evaluate, final round),
and the machine it runs on.
"""
