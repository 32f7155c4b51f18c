"""The attack table of issue 19: every class of attack on the judge, per kernel it applies
to, run through the whole evaluation (`hpcagents.judge.evaluate.evaluate_source`), with the
status and the reason it got; then the honest idioms. A script that prints a table, not
a test (the tests in tests/test_judge_trust.py assert the same outcomes).

    .venv/bin/python tests/bench/attack_table.py [--kernel dgemm]

Attacks marked "past the screens" run with the static screens switched off, as an
adversary who got past every one of them: the judge's design rejects them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import test_judge_trust as t  # noqa: E402
from hpcagents.judge import build, screen  # noqa: E402
from hpcagents.judge.evaluate import evaluate_source  # noqa: E402
from hpcagents.judge.timing import BuildConfig  # noqa: E402
from hpcagents.spec.kernelspec import load_kernel  # noqa: E402


def attacks(kernel_name: str) -> list[tuple[str, str, bool]]:
    """(class, code, past the screens) for one kernel."""
    k = load_kernel(kernel_name)
    out = [
        (
            "forged early answer (right nonce)",
            t.wrapped(k, pre="  hpca_forge_done();", prelude=t.FIND_NONCE),
            True,
        ),
        (
            "second answer after the work",
            t.wrapped(k, post="  hpca_forge_done();", prelude=t.FIND_NONCE),
            True,
        ),
        ("answer without the nonce", t.wrapped(k, pre='  (void)!write(1, "d\\n", 2);'), True),
        (
            "spinning thread (starve the reference)",
            t.wrapped(
                k,
                pre="  if (!hpca_started) { pthread_t th; hpca_started = 1; "
                "pthread_create(&th, 0, hpca_spin, 0); }",
                prelude=t.SPINNER,
            ),
            True,
        ),
    ]
    arr = next(p for p in k.parameters if p.kind == "array" and p.intent == "in")
    ctype = "int" if arr.type == "int" else "double"
    out.append(
        (
            "input used as scratch, restored",
            t.wrapped(
                k,
                pre=f"  volatile {ctype} *w = (volatile {ctype} *)(void *){arr.name};\n"
                f"  {ctype} keep = w[0]; w[0] = keep + 1; w[0] = keep;",
            ),
            True,
        )
    )
    for name in ("fork", "socket", "signal_to_another_process", "unprotect_the_inputs"):
        if "A" in [p.name for p in k.parameters] or name != "unprotect_the_inputs":
            out.append((f"system call: {name}", t.wrapped(k, pre=t.SYSCALLS[name][0]), True))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kernel", action="append", help="kernel(s), default all six")
    args = ap.parse_args()
    kernels = args.kernel or t.KERNELS
    rows = []
    saved = {
        n: getattr(build, n)
        for n in ("screen_source", "screen_includes", "screen_preprocessed", "screen_symbols")
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in kernels:
            k = load_kernel(name)
            for i, (cls, code, past) in enumerate(attacks(name)):
                for n in saved:
                    setattr(build, n, (lambda *a, **kw: screen.OK) if past else saved[n])
                work = Path(tmp) / f"{name}-{i}"
                work.mkdir()
                src = work / k.source
                src.write_text(code)
                t0 = time.monotonic()
                rec = evaluate_source(k, src, work / "w", BuildConfig(), t.cfg(name))
                rows.append(
                    (name, cls, rec["status"], round(time.monotonic() - t0, 1), rec["reason"])
                )
                print(f"| {name} | {cls} | {rec['status']} | {rec['reason'][:110]} |", flush=True)
    for n, f in saved.items():
        setattr(build, n, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
