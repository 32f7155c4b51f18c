"""The machine section exactly as a PM or PG prompt shows it, measured on this host.

Prints the machine model (measured with the campaign's compiler, flags and threads, or
read from the cache) through the same function the prompts use
(``hpcagents.llm.agents.machine_text``). Not a test: run it on the node that times, e.g. the
16-core node, to see what the agents are told there.

    .venv/bin/python tests/bench/machine_section.py [--cache DIR] [--threads N]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hpcagents.judge.machine import cpu_model, default_cache_dir, machine_model, usable_cores
from hpcagents.llm.agents import BuildInfo, machine_text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, default=None, help="machine-model cache dir")
    parser.add_argument("--threads", type=int, default=0, help="default: every usable core")
    parser.add_argument("--cc", default="gcc")
    parser.add_argument("--cflags", default="-O3 -march=native -fopenmp")
    args = parser.parse_args()
    cflags = tuple(args.cflags.split())
    threads = args.threads or usable_cores()
    model = machine_model(args.cache or default_cache_dir(), args.cc, cflags, threads)
    build = BuildInfo(
        cc=args.cc,
        cflags=cflags,
        cpu_model=cpu_model(),
        cores=usable_cores(),
        threads=threads,
        machine=model.to_dict(),
    )
    print(machine_text(build))


if __name__ == "__main__":
    main()
