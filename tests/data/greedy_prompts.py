"""The PM and PG prompts of fixed inputs, as the greedy search (the seed's) renders them.

``tests/test_archive_prompts.py`` pins that ``campaign.search: greedy`` renders exactly
these bytes. Regenerate the pinned file only when a prompt change is intended (it then
applies to both searches):

    .venv/bin/python tests/data/greedy_prompts.py > tests/data/greedy_prompts.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "workflow"))

from hpcagents.llm.agents import BuildInfo, Previous, pg_messages, pm_messages  # noqa: E402
from hpcagents.spec.kernelspec import load_kernel  # noqa: E402

MACHINE = {
    "host": "node17",
    "cpu_model": "AMD EPYC 9654 96-Core Processor",
    "cores": 2,
    "threads": 2,
    "cc": "gcc",
    "cflags": ["-O3", "-march=native", "-fopenmp"],
    "cc_version": "gcc (Debian 12.2.0-14+deb12u1) 12.2.0",
    "isa": ["sse2", "avx", "avx2", "fma", "avx512f"],
    "compiler_isa": ["avx", "avx2", "avx512f", "fma"],
    "caches": [{"level": 1, "type": "Data", "size_kib": 32, "shared_by": 1}],
    "peak_gflops": 117.5,
    "bandwidth_gbs": 30.4,
    "peak": {"vector_bits": 512, "lanes": 8, "fma": True},
}
BUILD = BuildInfo(
    cc="gcc",
    cflags=("-O3", "-march=native", "-fopenmp"),
    cpu_model="AMD EPYC",
    cores=2,
    threads=2,
    machine=MACHINE,
)
SELECTED = {
    "iteration": 1,
    "pg": 2,
    "attempt": 0,
    "strategy": "loop_reorder",
    "gflops": 4.0,
    "best_s": 2 * 768**3 / 4.0e9,
    "median_s": 2 * 768**3 / 3.9e9,
    "noise": 0.02,
    "pct_of_reference": 6.0,
    "reference_gflops": 66.0,
    "bench": {"m": 768, "n": 768, "k": 768, "alpha": 1.0, "beta": 0.0},
    "evaluation": "x",
    "source": "x",
}
HISTORY = [
    {
        "iteration": 1,
        "pg": pg,
        "strategy": name,
        "strategy_description": f"{name} as planned.",
        "attempts": 1 + (pg == 3),
        "status": "ok" if pg != 4 else "wrong_answer",
        "reason": "" if pg != 4 else "C[3,4] differs",
        "gflops": 4.0 + pg if pg != 4 else None,
        "pct_of_reference": 6.0 + pg if pg != 4 else None,
        "reference_gflops": 66.0,
    }
    for pg, name in enumerate(("loop_reorder", "cache_blocking", "packed_b", "typo"), start=1)
]
BEST = {"selected": SELECTED, "history": HISTORY}


def rendered() -> dict[str, Any]:
    """The three prompts of the fixed inputs: PM, a PG's first attempt, a repair."""
    kernel = load_kernel("dgemm")
    source = (kernel.directory / kernel.source).read_text()
    strategy = {"name": "packed_b", "description": "Pack panels of B."}
    siblings = [{"name": "cache_blocking", "description": "Tile the loops."}]
    pg = pg_messages(kernel, BUILD, 2, 3, 0, strategy, BEST, source, None, siblings=siblings)
    repair = pg_messages(
        kernel,
        BUILD,
        2,
        3,
        1,
        strategy,
        BEST,
        source,
        Previous("wrong_answer", "C[1,2] differs", "void kernel_dgemm(void) {}"),
        siblings=siblings,
    )
    return {"pm": pm_messages(kernel, BUILD, 2, 4, BEST, source), "pg": pg, "repair": repair}


if __name__ == "__main__":
    print(json.dumps(rendered(), indent=1))
