"""Benchmark: the measured machine model next to what the CPU's spec predicts (not a test).

Measures peak FP64 FLOP/s (FMA micro-benchmark) and STREAM-triad bandwidth with the
campaign's compiler and flags at 1 thread and at every usable core, exactly as a campaign
does (``hpcagents.judge.machine.machine_model``, fresh, in a temporary cache), and prints them
beside the spec prediction:

    predicted peak = threads x FMA units x (FMA datapath bits / 64) x 2 x clock

The assumptions, printed with the figures because /proc/cpuinfo does not state them:
  * 2 FMA units per core (every AVX2/AVX-512 server core since Haswell and Zen 1, except
    a few Xeon Bronze/Silver parts with one 512-bit unit);
  * the FMA datapath: the vector width the flags enable, but 256 bits on AMD family 0x19
    (Zen 3 and Zen 4 run a 512-bit FMA as two 256-bit halves) and earlier AMD;
  * the clock: /proc/cpuinfo "cpu MHz" (in a VM this is the nominal/base clock; the
    cores boost above it, so a measured peak above the prediction means boost).
The memory bandwidth has no prediction: channels and DIMM speed are not visible from a
VM (dmidecode needs root), so only the measured figure is printed. Usage:

    .venv/bin/python tests/bench/machine_model.py [--cflags "-O3 -march=native -fopenmp"]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from hpcagents.judge.machine import cpu_mhz, machine_model, usable_cores


def _cpuinfo(field: str) -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == field:
            return value.strip()
    return ""


def fma_datapath_bits(vector_bits: int) -> tuple[int, str]:
    vendor, family = _cpuinfo("vendor_id"), int(_cpuinfo("cpu family") or 0)
    if vendor == "AuthenticAMD" and family <= 0x19 and vector_bits > 256:
        return 256, f"AMD family {family:#x}: 512-bit FMA runs as two 256-bit halves"
    return vector_bits, f"{vendor} family {family:#x}: full {vector_bits}-bit FMA datapath"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cc", default="gcc")
    parser.add_argument("--cflags", default="-O3 -march=native -fopenmp")
    args = parser.parse_args()
    cflags = tuple(args.cflags.split())
    cores = usable_cores()
    mhz = cpu_mhz()
    units = 2
    print(f"CPU: {_cpuinfo('model name')}; {cores} usable cores; cpu MHz {mhz}")
    print(f"compiler: {args.cc} {' '.join(cflags)}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for threads in sorted({1, cores}):
            model = machine_model(Path(tmp), args.cc, cflags, threads)
            rows.append((threads, model))
    bits = rows[0][1].peak["vector_bits"]
    width, why = fma_datapath_bits(bits)
    per_cycle = units * (width // 64) * 2
    print(
        f"assumed: {units} FMA units/core, {width}-bit datapath ({why}); "
        f"{per_cycle} FP64 flops/cycle/core; clock {mhz} MHz from /proc/cpuinfo"
    )
    print(
        f"{'threads':>7}{'vector':>8}{'peak GFLOP/s':>14}{'spec GFLOP/s':>14}{'ratio':>7}"
        f"{'implied GHz':>13}{'triad GB/s':>12}{'array MiB':>11}{'ridge f/B':>11}"
    )
    for threads, m in rows:
        spec = threads * per_cycle * (mhz or 0) / 1e3
        ghz = m.peak_gflops / (m.threads * per_cycle)
        print(
            f"{m.threads:>7}{m.peak['vector_bits']:>8}{m.peak_gflops:>14.1f}{spec:>14.1f}"
            f"{m.peak_gflops / spec if spec else float('nan'):>7.2f}{ghz:>13.2f}"
            f"{m.bandwidth_gbs:>12.1f}{m.stream['array_mib']:>11.0f}{m.ridge_intensity:>11.2f}"
        )
    last = rows[-1][1]
    print(f"ISA: {' '.join(last.isa)}")
    print(f"caches: {last.caches}")
    print("memory bandwidth spec: not predicted (channels and DIMMs are not visible here)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
