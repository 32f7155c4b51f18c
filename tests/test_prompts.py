"""The prompts carry the machine, the rules and the history a model needs to plan and code.

A capable model given "Intel Xeon Processor (2 cores)", no ISA, no tolerance and a
history of bare strategy names wasted a factor two (AVX2 on an AVX-512 machine) and
repair rounds on rules it could not know; these tests pin what is now in the text.
"""

from __future__ import annotations

import json

from hpcagents.llm.agents import (
    BuildInfo,
    Previous,
    fit_pm,
    pg_messages,
    plan_schema,
    run_pm,
    spec_facts,
)
from hpcagents.llm.pool import LLMPool
from hpcagents.spec.config import LLMConfig, ServerConfig
from hpcagents.spec.kernelspec import load_kernel

KERNEL = load_kernel("dgemm")
SOURCE = (KERNEL.directory / KERNEL.source).read_text()
MACHINE = {
    "host": "node17",
    "cpu_model": "AMD EPYC 9654 96-Core Processor",
    "cores": 2,
    "threads": 2,
    "cc": "gcc",
    "cflags": ["-O3", "-march=native", "-fopenmp"],
    "cc_version": "gcc (Debian 12.2.0-14+deb12u1) 12.2.0",
    "isa": ["sse2", "avx", "avx2", "fma", "avx512f", "avx512vl", "amx_tile"],
    "compiler_isa": ["avx", "avx2", "avx512f", "avx512vl", "fma"],
    "caches": [
        {"level": 1, "type": "Data", "size_kib": 32, "shared_by": 1},
        {"level": 2, "type": "Unified", "size_kib": 1024, "shared_by": 1},
        {"level": 3, "type": "Unified", "size_kib": 32768, "shared_by": 2},
    ],
    "peak_gflops": 117.5,
    "bandwidth_gbs": 30.4,
    "peak": {"vector_bits": 512, "lanes": 8, "fma": True},
    "stream": {"array_mib": 128.0},
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
    "iteration": 2,
    "pg": 3,
    "attempt": 0,
    "strategy": "packed_b",
    "gflops": 49.0,
    "best_s": 2 * 768**3 / 49.0e9,
    "median_s": 2 * 768**3 / 48.0e9,
    "noise": 0.02,
    "pct_of_reference": 72.0,
    "reference_gflops": 68.1,
    "bench": {"m": 768, "n": 768, "k": 768, "alpha": 1.0, "beta": 0.0},
    "evaluation": "x",
    "source": "x",
}
HISTORY = [
    {
        "iteration": 1,
        "pg": 1,
        "strategy": "packed_b",
        "strategy_description": "Pack panels of B into aligned buffers before the inner loop.",
        "attempts": 1,
        "status": "ok",
        "reason": "",
        "gflops": 49.0,
        "pct_of_reference": 72.0,
        "reference_gflops": 68.1,
        "pct_of_roofline": 41.7,
    },
    {
        "iteration": 1,
        "pg": 2,
        "strategy": "omp_tiles",
        "strategy_description": "Parallelise 64x64 tiles of C with a dynamic schedule.",
        "attempts": 1,
        "status": "ok",
        "reason": "",
        "gflops": 70.0,
        "pct_of_reference": 40.0,
        "reference_gflops": 175.0,
    },
    {  # a row written before the lead's new fields: no description, no reference figure
        "iteration": 1,
        "pg": 3,
        "strategy": "asm_kernel",
        "attempts": 3,
        "status": "forbidden_code",
        "reason": "line 12: 'asm': inline assembly is not allowed",
        "gflops": None,
        "pct_of_reference": None,
    },
]
BEST = {"selected": SELECTED, "history": HISTORY}
PLAN = [
    {"name": "packed_b", "description": "Pack B."},
    {"name": "avx512_microkernel", "description": "An 8x24 AVX-512 FMA micro-kernel."},
    {"name": "prefetch", "description": "Prefetch the next panels of A and B."},
]


def _pm_text() -> str:
    messages, _ = fit_pm(KERNEL, BUILD, 3, 4, BEST, SOURCE, None)
    return messages[-1]["content"]


def _assert_machine_and_rules(text: str) -> None:
    # the machine, as measured
    assert "ISA features of the CPU: sse2 avx avx2 fma avx512f avx512vl amx_tile." in text
    assert "widest double vector: 512 bits = 8 doubles" in text
    assert "L1d 32 KiB per core, L2 1 MiB per core, L3 32 MiB shared by 2 CPUs" in text
    assert "exactly 2 OpenMP thread(s): OMP_NUM_THREADS=2 is set" in text
    assert 'Compiler: gcc, version "gcc (Debian 12.2.0-14+deb12u1) 12.2.0"' in text
    assert "peak 117.5 GFLOP/s" in text and "30.4 GB/s (STREAM triad)" in text
    assert "node17" not in text  # the host name is no business of the model's
    # the rules the evaluation enforces
    facts = spec_facts(KERNEL)
    assert facts["tolerance"] in text and "forward-error bound" in text
    assert facts["poison"] and all(p in text for p in facts["poison"])
    assert "NaN" in text and "beta == 0" in text
    assert "inline assembly" in text and "optimize" in text and "constructors" in text
    assert "#include of a file by path" in text and "BLAS" in text
    assert f"one global symbol, {KERNEL.function}" in text
    assert "m=257 n=257 k=257" in text  # the validation cases, by their labels


def test_pm_prompt_describes_the_machine_the_rules_and_the_incumbent():
    text = _pm_text()
    context = fit_pm(KERNEL, BUILD, 3, 4, BEST, SOURCE, None)[1]
    assert context["machine"]["host"] == "node17"  # plan.json names the model it quoted
    assert context["machine"]["peak_gflops"] == 117.5
    _assert_machine_and_rules(text)
    # the header lines (the scripted model reads them too) open the prompt; no tag of the
    # stand-in's own reaches a real model
    assert text.startswith("Kernel: dgemm\nIteration: 3\nStrategies wanted: 4\n")
    assert "[hpcagents" not in text
    # roofline position of the incumbent: 2*768^3 flops over 8*(3*768^2+768^2) bytes
    intensity = 2 * 768**3 / (8 * 4 * 768**2)
    assert f"arithmetic intensity {intensity:.2f} flop/byte, compute-bound" in text
    assert "reaches 41.7% of it" in text  # 49 of min(117.5, 48 * 30.4) GFLOP/s


def test_pm_history_carries_descriptions_reference_figures_and_roofline():
    text = _pm_text()
    assert (
        "packed_b (Pack panels of B into aligned buffers before the inner loop.): valid, "
        "49.00 GFLOP/s = 72.0% of the reference (68.10 GFLOP/s in the same run), "
        "41.7% of the roofline; 1 attempt(s)"
    ) in text
    # a row without its own roofline figure gets one from the incumbent's attainable rate
    row = "= 40.0% of the reference (175.00 GFLOP/s in the same run), 59.6% of the roofline"
    assert row in text  # 70 of 117.5 GFLOP/s
    # an old row without the new fields still reads
    assert "asm_kernel: FAILED (forbidden_code: line 12: 'asm'" in text


def test_pg_prompt_names_the_sibling_strategies_and_the_machine():
    messages = pg_messages(KERNEL, BUILD, 3, 1, 0, PLAN[0], BEST, SOURCE, None, siblings=PLAN[1:])
    text = messages[-1]["content"]
    _assert_machine_and_rules(text)
    assert text.startswith("Kernel: dgemm\nIteration: 3\nPG: 1\nAttempt: 0\nStrategy: packed_b\n")
    assert "[hpcagents" not in text
    assert "- avx512_microkernel: An 8x24 AVX-512 FMA micro-kernel." in text
    assert "- prefetch: Prefetch the next panels of A and B." in text
    assert "reaches 41.7% of it" in text


def test_repair_prompt_keeps_the_rules():
    prev = Previous(status="wrong_answer", error="C[0][0] = nan", source=SOURCE)
    text = pg_messages(KERNEL, BUILD, 3, 1, 1, PLAN[0], BEST, SOURCE, prev)[-1]["content"]
    _assert_machine_and_rules(text)
    assert "Attempt: 1" in text and "C[0][0] = nan" in text


def test_prompt_without_a_machine_model_says_only_what_is_known():
    bare = BuildInfo(cc="gcc", cflags=("-O3",), cpu_model="test CPU", cores=2)
    text = fit_pm(KERNEL, bare, 3, 4, BEST, SOURCE, None)[0][-1]["content"]
    assert "CPU: test CPU, 2 cores." in text and "Compiler: gcc; flags" in text
    assert "ISA features" not in text and "Roofline" not in text
    assert "41.7% of the roofline" in text  # a row's own figure stays
    assert "59.6% of the roofline" not in text  # none is computed without a machine model


def test_plan_schema_asks_for_exactly_n_strategies():
    schema = plan_schema(4)
    assert schema["properties"]["strategies"]["minItems"] == 4
    assert schema["properties"]["strategies"]["maxItems"] == 4
    assert plan_schema(2)["properties"]["strategies"]["maxItems"] == 2  # a copy per request


def test_the_schema_sent_with_the_pm_request_has_n_items(tmp_path, start_scripted):
    server = start_scripted()
    cfg = LLMConfig(
        servers=(ServerConfig("s", server.url, "scripted-stand-in"),),
        temperature=0,
        max_tokens=2048,
        max_retries=0,
        max_reasks=0,
        cache_dir=tmp_path / "cache",
    )
    record = run_pm(LLMPool(cfg), KERNEL, BUILD, 3, 3, BEST, SOURCE, seed=1, max_reasks=0)
    assert record["origin"] == "llm" and len(record["strategies"]) == 3
    sent = [json.loads(p.read_text()) for p in (tmp_path / "cache").rglob("*.json")]
    schemas = [s["request"]["params"]["json_schema"] for s in sent if "request" in s]
    assert schemas, "the request was not recorded"
    items = schemas[0]["properties"]["strategies"]
    assert items["minItems"] == 3 and items["maxItems"] == 3


def test_spec_facts_read_the_parameter_list_form_of_a_spec():
    """The kernel spec is moving to a generic parameter list (kernels/README.md): the same
    reader gives its tolerance and poisoned memory, for a stencil-like kernel too."""
    from types import SimpleNamespace as NS

    class Case(dict):
        def label(self) -> str:
            return " ".join(f"{k}={v}" for k, v in self.items())

    def array(name, intent, **kw):
        fields = {"ld": None, "halo": 0, "poison_when": None} | kw
        return NS(name=name, kind="array", intent=intent, **fields)

    spec = NS(
        tolerance=NS(model="error_bound", factor=4.0, terms="7", rtol=0.0, atol=0.0),
        parameters=(
            NS(name="n", kind="size"),
            array("u", "in", halo=1),
            array("v", "out", halo=1),
            array("w", "inout", ld="ldw", poison_when="beta == 0"),
            NS(name="ldw", kind="ld"),
        ),
        cases=(Case(n=7, beta=0.0, pad=2), Case(n=1, beta=1.0, pad=0)),
    )
    facts = spec_facts(spec)
    assert facts["tolerance"].startswith("elementwise |out - ref| <= 4 x (7) x eps")
    assert facts["poison"] == [
        "u is read-only: it is compared bitwise after every call",
        "v holds NaN on entry: write every element, never read it",
        "the 1-cell halo of v must not be written",
        "w holds NaN on entry when beta == 0: it must not be read then",
        "the padding of w (from its last extent up to ldw) must not be written",
        "a write past the end of any array is detected (a guard zone follows each)",
    ]
    assert facts["cases"] == ["n=7 beta=0.0 pad=2", "n=1 beta=1.0 pad=0"]
    relative = NS(**{**vars(spec), "tolerance": NS(model="relative", rtol=1e-12, atol=1e-300)})
    assert spec_facts(relative)["tolerance"] == "elementwise |out - ref| <= 1e-12 * |ref| + 1e-300"
