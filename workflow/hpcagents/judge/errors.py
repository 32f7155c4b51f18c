"""The judge's two failures: its own side's (JudgeError: status harness_error) and the
candidate's process dying or hanging (RunnerFault: crash or timeout).
"""

from __future__ import annotations


class JudgeError(RuntimeError):
    """A fault of the judge's side (reference, environment): status harness_error."""


class RunnerFault(Exception):
    """The candidate's runner died or timed out: ``status`` is crash or timeout."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
