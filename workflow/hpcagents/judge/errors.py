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


def contender_fault(exc: BaseException, timeout_s: float) -> tuple[str, str]:
    """(status, reason) of one contender's fault in a round of several, whatever raised it:
    the final round and its scale check remove that contender alone with these."""
    if isinstance(exc, RunnerFault):
        if exc.status == "timeout":
            return "timeout", f"the call did not finish within {timeout_s:g} s"
        return exc.status, exc.reason
    if isinstance(exc, JudgeError):
        return "harness_error", f"the judge failed on this contender's process: {exc}"
    return "harness_error", f"the judge failed on this contender ({type(exc).__name__}: {exc})"
