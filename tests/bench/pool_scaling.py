"""Benchmark: LLM part of one iteration for N = 1, 2, 4, 8 PGs over 1, 2, 4 servers (not a test).

Each server is a scripted model (a STAND-IN for an LLM) with a batching-server latency
model: a request takes base + per_token x completion tokens, stretched by
(1 + contention x (requests in flight - 1)). One iteration = the PM request, then N PG
requests, each from its own process through hpcagents.llm.pool.LLMPool (as Snakemake runs
generate jobs), PG j on server j mod S, per-server caps held by file locks.

Compared with (a) the ideal critical path: PM alone + the slowest PG alone on an idle
server, and (b) the same requests one after another (the seed poster's "conventional
sequential agent system"). Utilisation = busy time of the servers / (servers x wall).

    .venv/bin/python tests/bench/pool_scaling.py
"""

from __future__ import annotations

import argparse
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import openai  # noqa: F401 - imported before the workers fork, as a warm Snakemake job would be
from hpcagents.llm.pool import LLMPool
from hpcagents.scripted import serve
from hpcagents.spec.config import LLMConfig, ServerConfig

STRATEGY = "packed_b"
STRATEGIES = [
    "loop_reorder",
    "cache_blocking",
    "packed_b",
    "omp_simd",
    "avx512_microkernel",
    "tile_tuning",
    "larger_panels",
    "dynamic_schedule",
]


def messages(role: str, i: int, pg: int = 0, strategy: str = "") -> list[dict[str, str]]:
    if role == "pm":
        head = f"Kernel: dgemm\nIteration: {i}\nStrategies wanted: 8\n"
    else:
        head = f"Kernel: dgemm\nIteration: {i}\nPG: {pg}\nAttempt: 0\nStrategy: {strategy}\n"
    return [{"role": "user", "content": head}]


def make_cfg(urls: list[str], cache: Path, cap: int) -> LLMConfig:
    servers = tuple(
        ServerConfig(
            name=f"s{k}", base_url=u, model="scripted-stand-in", max_concurrency=cap, timeout_s=120
        )
        for k, u in enumerate(urls)
    )
    return LLMConfig(
        servers=servers,
        temperature=0.0,
        max_tokens=4096,
        max_retries=0,
        max_reasks=0,
        cache_dir=cache,
    )


def ask(args: tuple) -> tuple[float, float]:
    cfg, msgs, index, seed = args
    start = time.monotonic()
    LLMPool(cfg).chat(msgs, index=index, seed=seed)
    return start, time.monotonic()


def noop(x: int) -> int:
    return x


def iteration(
    urls: list[str], n: int, tag: int, root: Path, cap: int, ex: ProcessPoolExecutor
) -> dict[str, float]:
    cfg = make_cfg(urls, root / f"cache-{tag}", cap)
    start = time.monotonic()
    pm_span = ask((cfg, messages("pm", tag), 0, tag))
    # Homogeneous PG requests (same strategy, so the same answer length, distinct
    # prompts): the comparison with N = 1 then measures parallelism, not answer length.
    jobs = [
        (cfg, messages("pg", tag, pg, STRATEGY), pg - 1, tag * 100 + pg) for pg in range(1, n + 1)
    ]
    spans = list(ex.map(ask, jobs))
    wall = time.monotonic() - start
    per_server: dict[int, list[tuple[float, float]]] = {0: [pm_span]}
    for pg, span in enumerate(spans):
        per_server.setdefault(pg % len(urls), []).append(span)
    busy = sum(union(v) for v in per_server.values())
    return {"wall": wall, "busy": busy}


def union(spans: list[tuple[float, float]]) -> float:
    """Length of the union of time intervals: the time a server had work in flight."""
    total, end = 0.0, float("-inf")
    for s, e in sorted(spans):
        if e > end:
            total += e - max(s, end)
            end = e
    return total


def solo(url: str, root: Path, tag: int) -> tuple[float, float]:
    """Latency of the PM and of one PG request alone on an idle server."""
    cfg = make_cfg([url], root / f"solo-{tag}", 1)
    s, e = ask((cfg, messages("pm", tag), 0, tag))
    s2, e2 = ask((cfg, messages("pg", tag, 1, STRATEGY), 0, tag * 100 + 1))
    return e - s, e2 - s2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", type=float, default=0.3, help="seconds per request")
    parser.add_argument("--per-token", type=float, default=0.0015, help="seconds per token")
    parser.add_argument("--contention", type=float, default=0.05)
    parser.add_argument("--cap", type=int, default=8, help="max_concurrency per server")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        servers = [
            serve(
                port=0,
                latency=args.base,
                latency_per_token=args.per_token,
                contention=args.contention,
            )
            for _ in range(4)
        ]
        try:
            pm_solo, pg_solo = solo(servers[0].url, root, 999)
            print(
                "scripted model (a stand-in) latency model: "
                f"{args.base}s + {args.per_token}s/token"
                f" x (1 + {args.contention} x (in flight - 1))"
            )
            print(
                f"{'N':>3}{'S':>3}{'wall s':>9}{'ideal s':>9}{'x ideal':>9}{'sequential s':>14}"
                f"{'x N=1':>8}{'util %':>8}"
            )
            base_wall: dict[int, float] = {}
            tag = 1
            ex = ProcessPoolExecutor(max_workers=8)
            list(ex.map(noop, range(64)))  # workers up before any timing
            for s in (1, 2, 4):
                for n in (1, 2, 4, 8):
                    tag += 1
                    r = iteration([x.url for x in servers[:s]], n, tag, root, args.cap, ex)
                    ideal = pm_solo + pg_solo
                    sequential = pm_solo + n * pg_solo
                    util = 100 * r["busy"] / (s * r["wall"])
                    if n == 1:
                        base_wall[s] = r["wall"]
                    print(
                        f"{n:>3}{s:>3}{r['wall']:>9.2f}{ideal:>9.2f}{r['wall'] / ideal:>9.2f}"
                        f"{sequential:>14.2f}{r['wall'] / base_wall[s]:>8.2f}{util:>8.1f}"
                    )
            ex.shutdown()
        finally:
            for x in servers:
                x.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
