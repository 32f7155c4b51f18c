"""The machine model: what this host can do, measured once and cached.

A kernel's GFLOP/s says little until it is set against what the machine can deliver: a
memory-bound kernel (a stencil, SpMV, GEMV) is judged by bandwidth, a compute-bound one
by the FMA pipes. Both limits are MEASURED here, not looked up, because a VM's CPU string
("AMD EPYC", "Intel Xeon Processor") names neither its clock nor its vector units, and
because what matters is what the campaign's own compiler, flags and thread count reach:

* peak FP64 FLOP/s: ``bench_c/fma_peak.c``, independent FMA chains on the widest vector
  the flags enable, OpenMP over the campaign's threads;
* sustainable bandwidth: ``bench_c/stream_triad.c``, STREAM triad over arrays four times
  the last-level cache, best of several runs.

Both C files are trusted project code, compiled and run here (never in the sandbox that
holds candidate code). The result is cached as JSON per host, CPU model, compiler (and
its version), flags and thread count, so a campaign measures once and every later step
reads the file. Alongside the figures the model records the facts the agents need:
ISA features, cache sizes, cores, threads, compiler version.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import re
import socket
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .artifacts import ArtifactError, read_json, write_json

BENCH_DIR = Path(__file__).resolve().parent / "bench_c"
#: Relative to the campaign's working directory, beside the effective config, so the
#: figures the prompts quoted stay with the campaign (and an exact replay finds them).
DEFAULT_CACHE_DIR = Path("results/.hpcagents/machine")
#: Overrides the cache dir (e.g. one cache for every test campaign of a session).
CACHE_ENV = "HPCAGENTS_MACHINE_CACHE"
SOURCES = ("fma_peak.c", "stream_triad.c")

#: How many times a model was measured in this process (tests read it: a cached call
#: must not measure).
measure_count = 0

# /proc/cpuinfo flags that matter to someone writing a numerical kernel, in reading order.
_ISA_ORDER = (
    "sse2",
    "pni",
    "ssse3",
    "sse4_1",
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "fma4",
    "f16c",
    "avx_vnni",
)
_ISA_PATTERN = re.compile(r"^(avx512\w*|avx_\w+|amx_?\w*)$")


class MachineError(RuntimeError):
    """A micro-benchmark could not be built or run; the message names the command."""


@dataclass(frozen=True)
class BenchSettings:
    """How long the micro-benchmarks run. Short FMA runs, many of them: on a shared node
    the best run is the one no other process disturbed, and shorter runs find such a
    window more often; each run still lasts thousands of timer ticks."""

    peak_run_s: float = 0.02
    peak_runs: int = 30
    peak_retries: int = 2  # repeats of the N-thread run when it does not scale
    stream_runs: int = 30
    stream_min_mib: int = 64  # per array, even when the last-level cache is small
    stream_max_mib: int = 1024  # per array
    timeout_s: float = 300.0


@dataclass(frozen=True)
class MachineModel:
    """One host's limits and facts, as measured with one compiler, flags and threads."""

    host: str
    cpu_model: str
    cpu_mhz: float | None  # /proc/cpuinfo "cpu MHz" when measured (base clock in most VMs)
    cores: int  # CPUs this process may run on
    threads: int  # OpenMP threads the benchmarks ran with (the campaign's)
    cc: str
    cflags: tuple[str, ...]
    cc_version: str
    isa: tuple[str, ...]  # CPU features from /proc/cpuinfo
    compiler_isa: tuple[str, ...]  # the ISA macros these flags enable (__AVX512F__, ...)
    caches: tuple[dict[str, Any], ...]  # {level, type, size_kib, shared_by}
    peak_gflops: float
    bandwidth_gbs: float
    peak: dict[str, Any]  # the FMA benchmark's own record (vector width, runs, ...)
    stream: dict[str, Any]  # the STREAM benchmark's own record (array size, runs, ...)
    measured_at: str
    key: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def ridge_intensity(self) -> float:
        """Flops per byte where the roofline turns from memory- to compute-bound."""
        return self.peak_gflops / self.bandwidth_gbs

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["cflags"] = list(self.cflags)
        data["isa"] = list(self.isa)
        data["compiler_isa"] = list(self.compiler_isa)
        data["caches"] = [dict(c) for c in self.caches]
        data["ridge_intensity"] = round(self.ridge_intensity, 4)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MachineModel:
        names = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in names}
        for key in ("cflags", "isa", "compiler_isa"):
            values[key] = tuple(values.get(key, ()))
        values["caches"] = tuple(dict(c) for c in values.get("caches", ()))
        return cls(**values)


# ---------------------------------------------------------------- facts of the host


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _cpuinfo_field(name: str) -> str | None:
    for line in _cpuinfo().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return None


def cpu_model() -> str:
    return _cpuinfo_field("model name") or "unknown CPU"


def cpu_mhz() -> float | None:
    value = _cpuinfo_field("cpu MHz")
    try:
        return float(value) if value else None
    except ValueError:
        return None


def cpu_flags() -> set[str]:
    return set((_cpuinfo_field("flags") or "").split())


def isa_features(flags: set[str] | None = None) -> tuple[str, ...]:
    """The vector and matrix features among the CPU flags, ``pni`` shown as ``sse3``."""
    flags = cpu_flags() if flags is None else flags
    known = [f for f in _ISA_ORDER if f in flags]
    extra = sorted(f for f in flags if _ISA_PATTERN.match(f) and f not in known)
    return tuple("sse3" if f == "pni" else f for f in known + extra)


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _cpu_list_len(text: str) -> int:
    count = 0
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return count


def _size_kib(text: str) -> int:
    """``32K`` (sysfs), ``32 KiB`` or ``1M`` in KiB; a bare number is bytes."""
    m = re.fullmatch(r"(\d+)\s*([KMG]?)(?:I?B)?", text.strip().upper())
    if not m:
        return 0
    number, unit = int(m.group(1)), m.group(2)
    return number // 1024 if not unit else number * {"K": 1, "M": 1024, "G": 1024**2}[unit]


def caches(cpu_dir: Path = Path("/sys/devices/system/cpu")) -> tuple[dict[str, Any], ...]:
    """Cache levels of CPU 0 from sysfs: level, type, size and how many CPUs share it."""
    out = []
    for index in sorted((cpu_dir / "cpu0" / "cache").glob("index*")):
        try:
            level = int((index / "level").read_text())
            kind = (index / "type").read_text().strip()
            size = _size_kib((index / "size").read_text())
            shared = _cpu_list_len((index / "shared_cpu_list").read_text())
        except (OSError, ValueError):
            continue
        out.append({"level": level, "type": kind, "size_kib": size, "shared_by": shared})
    return tuple(out) or _lscpu_caches()


def caches_from_lscpu(data: Mapping[str, Any], cpus: int) -> tuple[dict[str, Any], ...]:
    """Cache levels from ``lscpu -J -C -B`` (where sysfs has no cache directory):
    instances = all-size / one-size, each shared by cpus / instances CPUs."""
    out = []
    for c in data.get("caches", []):
        try:
            one, total = int(c["one-size"]), int(c["all-size"])
            level = int(c["level"])
        except (KeyError, TypeError, ValueError):
            continue
        instances = max(1, total // one) if one else 1
        out.append(
            {
                "level": level,
                "type": str(c.get("type", "Unified")),
                "size_kib": one // 1024,
                "shared_by": max(1, cpus // instances),
            }
        )
    return tuple(out)


def _lscpu_caches() -> tuple[dict[str, Any], ...]:
    try:
        out = subprocess.run(
            ["lscpu", "-J", "-C", "-B"], capture_output=True, text=True, timeout=30
        )
        return caches_from_lscpu(json.loads(out.stdout), os.cpu_count() or 1)
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return ()


def last_level_cache_bytes(cpu_dir: Path = Path("/sys/devices/system/cpu")) -> int:
    """All instances of the last-level cache together (e.g. one L3 per socket or CCD)."""
    instances: dict[str, int] = {}
    top = 0
    for index in cpu_dir.glob("cpu[0-9]*/cache/index*"):
        try:
            level = int((index / "level").read_text())
            if (index / "type").read_text().strip() == "Instruction":
                continue
            size = _size_kib((index / "size").read_text()) * 1024
            shared = (index / "shared_cpu_list").read_text().strip()
        except (OSError, ValueError):
            continue
        if level > top:
            top, instances = level, {}
        if level == top:
            instances[shared] = size
    if not instances:  # no sysfs cache directories: lscpu's view, all instances together
        levels = _lscpu_caches()
        top = max((c["level"] for c in levels), default=0)
        cpus = os.cpu_count() or 1
        return sum(
            c["size_kib"] * 1024 * max(1, cpus // c["shared_by"])
            for c in levels
            if c["level"] == top and c["type"] != "Instruction"
        )
    return sum(instances.values())


def compiler_version(cc: str) -> str:
    try:
        out = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MachineError(f"the compiler {cc!r} cannot be run: {exc}") from None
    if out.returncode != 0 or not out.stdout.strip():
        raise MachineError(f"'{cc} --version' failed: {(out.stderr or out.stdout)[:300]}")
    return out.stdout.splitlines()[0].strip()


def compiler_isa(cc: str, cflags: Sequence[str]) -> tuple[str, ...]:
    """The ISA extensions the compiler targets with these flags, from its predefined
    macros: what the CPU has is not what ``-march=...`` lets a kernel use."""
    try:
        out = subprocess.run(
            [cc, *cflags, "-dM", "-E", "-x", "c", os.devnull],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ()
    names = re.findall(r"#define __((?:AVX|AMX|FMA|SSE)\w*?)__ 1", out.stdout)
    wanted = sorted({n for n in names if not n.endswith("_MATH")})
    return tuple(n.lower() for n in wanted)


# ---------------------------------------------------------------- the cache


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR)


def _sources_sha() -> str:
    h = hashlib.sha256()
    for name in SOURCES:
        h.update((BENCH_DIR / name).read_bytes())
    return h.hexdigest()


def cache_key(
    host: str, cpu: str, cc: str, cc_version: str, cflags: Sequence[str], threads: int
) -> str:
    """Everything a measurement depends on (and the benchmarks' own source)."""
    ident = {
        "host": host,
        "cpu_model": cpu,
        "cc": cc,
        "cc_version": cc_version,
        "cflags": list(cflags),
        "threads": threads,
        "bench_sources": _sources_sha(),
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def _cache_path(cache_dir: Path, host: str, key: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", host)[:60] or "host"
    return Path(cache_dir) / f"{safe}-{key[:16]}.json"


def find_cached(
    cache_dir: Path, host: str, cc: str, cflags: Sequence[str], threads: int
) -> MachineModel | None:
    """A model another process measured on ``host`` (e.g. the node that times the
    kernels, seen from the node that talks to the LLM servers); None if there is none.
    The newest matching measurement wins."""
    found = []
    for path in Path(cache_dir).glob("*.json"):
        try:
            data = read_json(path, "machine")
        except (OSError, ValueError, ArtifactError):
            continue
        if (
            data["host"] == host
            and data["cc"] == cc
            and tuple(data["cflags"]) == tuple(cflags)
            and data["threads_requested"] == threads
        ):
            found.append(data)
    if not found:
        return None
    return MachineModel.from_dict(max(found, key=lambda d: d["measured_at"]))


def machine_model(
    cache_dir: Path,
    cc: str,
    cflags: tuple[str, ...],
    threads: int,
    *,
    refresh: bool = False,
    settings: BenchSettings | None = None,
) -> MachineModel:
    """This host's model for ``cc``/``cflags``/``threads``: from the cache, else measured.

    Measuring takes a few seconds; concurrent callers on one host wait on a lock and the
    second reads what the first measured, so two benchmarks never share the cores.
    """
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    cache_dir = Path(cache_dir)
    host, cpu = socket.gethostname(), cpu_model()
    version = compiler_version(cc)
    key = cache_key(host, cpu, cc, version, cflags, threads)
    path = _cache_path(cache_dir, host, key)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / f".{path.stem}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not refresh and path.is_file():
            try:
                return MachineModel.from_dict(read_json(path, "machine"))
            except (ValueError, ArtifactError):
                pass  # unreadable cache: measure again and overwrite it
        model = _measure(host, cpu, cc, version, tuple(cflags), threads, key, settings)
        write_json(path, {**model.to_dict(), "threads_requested": threads}, "machine")
        return model


def model_for_host(
    cache_dir: Path, host: str | None, cc: str, cflags: tuple[str, ...], threads: int
) -> MachineModel | None:
    """The model of ``host``, the node that times the kernels.

    On that node it is measured if not cached yet; from another node (the one that talks
    to the LLM servers, under Slurm) only a model that node already cached is used: a
    login node's figures would describe the wrong machine.
    """
    if host is None or host == socket.gethostname():
        return machine_model(cache_dir, cc, cflags, threads)
    return find_cached(cache_dir, host, cc, cflags, threads)


# ---------------------------------------------------------------- measuring


def _bench_env(threads: int) -> dict[str, str]:
    # the same OpenMP placement the evaluation gives candidates
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C",
        "OMP_NUM_THREADS": str(threads),
        "OMP_PROC_BIND": "close",
        "OMP_PLACES": "cores",
    }


def _build(cc: str, cflags: Sequence[str], name: str, workdir: Path) -> Path:
    exe = workdir / Path(name).stem
    cmd = [cc, *cflags, str(BENCH_DIR / name), "-o", str(exe)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise MachineError(f"building {name} failed: {' '.join(cmd)}: {exc}") from None
    if out.returncode != 0:
        first = next(
            (ln for ln in out.stderr.splitlines() if "error" in ln.lower()), out.stderr[:300]
        )
        raise MachineError(
            f"the micro-benchmark {name} does not build with '{' '.join(cmd)}': {first.strip()}"
            " (check build.cc and build.cflags)"
        )
    return exe


def _run_json(cmd: list[str], threads: int, timeout: float) -> dict[str, Any]:
    try:
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=_bench_env(threads)
        )
    except subprocess.TimeoutExpired:
        raise MachineError(f"{' '.join(cmd)} did not finish within {timeout:g} s") from None
    if out.returncode != 0:
        raise MachineError(
            f"{' '.join(cmd)} exited with code {out.returncode}: {out.stderr.strip()[:300]}"
        )
    try:
        return json.loads(out.stdout)
    except ValueError:
        raise MachineError(f"{' '.join(cmd)} printed no JSON: {out.stdout[:300]}") from None


def _mem_available_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def stream_elements(llc_bytes: int, settings: BenchSettings) -> int:
    """Elements per array: four times the last-level cache (STREAM's rule), within the
    settings' bounds, and the three arrays within a quarter of the available memory."""
    per_array = max(4 * llc_bytes, settings.stream_min_mib << 20)
    per_array = min(per_array, settings.stream_max_mib << 20)
    avail = _mem_available_bytes()
    if avail:
        per_array = min(per_array, avail // 12)
    return max(1024, per_array // 8)


#: N threads reaching less than this share of N x one thread means the node was busy.
MIN_SCALING = 0.6


def _peak(fma: Path, threads: int, settings: BenchSettings) -> dict[str, Any]:
    """The FMA benchmark at ``threads``, checked against one thread times ``threads``.

    On a node shared with other processes no run may be undisturbed; one thread finds a
    free core far more easily than N threads find N. When the N-thread figure falls
    below ``MIN_SCALING`` of N x the one-thread figure, the N-thread measurement is
    repeated (up to ``settings.peak_retries`` times, the best kept) and a warning
    recorded if it never scales: the model then says it was measured on a busy node.
    """
    cmd = [str(fma), repr(settings.peak_run_s), str(settings.peak_runs), "0.9999999"]
    peak = _run_json(cmd, threads, settings.timeout_s)
    if peak["threads"] <= 1:
        peak["single_thread_gflops"] = peak["gflops"]
        return peak
    single = _run_json(cmd, 1, settings.timeout_s)["gflops"]
    tries, floor = 1, MIN_SCALING * peak["threads"] * single
    while peak["gflops"] < floor and tries <= settings.peak_retries:
        again = _run_json(cmd, threads, settings.timeout_s)
        tries += 1
        if again["gflops"] > peak["gflops"]:
            peak = again
    peak["single_thread_gflops"] = single
    peak["scaling"] = round(peak["gflops"] / (peak["threads"] * single), 3)
    peak["measurements"] = tries
    if peak["scaling"] < MIN_SCALING:
        peak["warning"] = (
            f"{peak['threads']} threads reached only {peak['scaling']:.0%} of "
            f"{peak['threads']} x one thread ({single:.1f} GFLOP/s): the node was busy; "
            "measure again on a quiet node (hpcagents machine --refresh)"
        )
    return peak


def _measure(
    host: str,
    cpu: str,
    cc: str,
    version: str,
    cflags: tuple[str, ...],
    threads: int,
    key: str,
    settings: BenchSettings | None,
) -> MachineModel:
    global measure_count
    measure_count += 1
    settings = settings or BenchSettings()
    llc = last_level_cache_bytes()
    with tempfile.TemporaryDirectory(prefix="hpca-machine-") as tmp:
        work = Path(tmp)
        fma, triad = (_build(cc, cflags, name, work) for name in SOURCES)
        peak = _peak(fma, threads, settings)
        elements = stream_elements(llc, settings)
        stream = _run_json(
            [str(triad), str(elements), str(settings.stream_runs)], threads, settings.timeout_s
        )
    if peak["threads"] != stream["threads"]:
        raise MachineError(
            f"the benchmarks ran with {peak['threads']} and {stream['threads']} threads"
        )
    stream["array_mib"] = round(elements * 8 / 2**20, 1)
    stream["last_level_cache_mib"] = round(llc / 2**20, 1)
    stream["beyond_last_level_cache"] = elements * 8 >= 4 * llc if llc else None
    if not (peak["gflops"] > 0 and stream["gbs"] > 0):
        raise MachineError(f"implausible measurement: peak {peak}, stream {stream}")
    return MachineModel(
        host=host,
        cpu_model=cpu,
        cpu_mhz=cpu_mhz(),
        cores=usable_cores(),
        threads=int(peak["threads"]),
        cc=cc,
        cflags=cflags,
        cc_version=version,
        isa=isa_features(),
        compiler_isa=compiler_isa(cc, cflags),
        caches=caches(),
        peak_gflops=round(float(peak["gflops"]), 3),
        bandwidth_gbs=round(float(stream["gbs"]), 3),
        peak=peak,
        stream=stream,
        measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        key=key,
        settings=asdict(settings),
    )


# ---------------------------------------------------------------- the roofline


def roofline(
    flops: float, bytes_: float, seconds: float, model: MachineModel | Mapping[str, Any]
) -> dict[str, Any]:
    """Where one timed run sits under the roofline of ``model``.

    Attainable GFLOP/s = min(peak, intensity x bandwidth); the run is memory-bound when
    the bandwidth term is the smaller. ``pct_of_roofline`` is the achieved rate over the
    attainable one (it can pass 100 when caches serve more than the byte model counts).
    """
    if isinstance(model, MachineModel):
        peak, bandwidth = model.peak_gflops, model.bandwidth_gbs
    else:
        peak, bandwidth = float(model["peak_gflops"]), float(model["bandwidth_gbs"])
    for name, value in (("flops", flops), ("bytes", bytes_), ("seconds", seconds)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"roofline: {name} must be a positive number, got {value!r}")
    if not (peak > 0 and bandwidth > 0):
        raise ValueError(f"roofline: the machine model has peak {peak} and bandwidth {bandwidth}")
    intensity = flops / bytes_
    memory_roof = intensity * bandwidth
    attainable = min(peak, memory_roof)
    achieved = flops / seconds / 1e9
    return {
        "arithmetic_intensity": intensity,
        "achieved_gflops": achieved,
        "attainable_gflops": attainable,
        "peak_gflops": peak,
        "bandwidth_gbs": bandwidth,
        "ridge_intensity": peak / bandwidth,
        "bound": "memory" if memory_roof < peak else "compute",
        "pct_of_roofline": 100.0 * achieved / attainable,
    }


def describe(model: MachineModel) -> str:
    """A few lines for a person (the ``hpcagents machine`` command)."""
    caches_txt = ", ".join(cache_label(c) for c in model.caches) or "unknown"
    peak, stream = model.peak, model.stream
    return "\n".join(
        [
            f"host:       {model.host}",
            f"CPU:        {model.cpu_model} ({model.cores} usable cores"
            + (f", cpu MHz {model.cpu_mhz:.0f})" if model.cpu_mhz else ")"),
            f"ISA (CPU):  {' '.join(model.isa) or 'unknown'}",
            f"ISA (cc):   {' '.join(model.compiler_isa) or 'unknown'}",
            f"caches:     {caches_txt}",
            f"compiler:   {model.cc_version}; flags {' '.join(model.cflags)}",
            f"threads:    {model.threads}",
            f"peak FP64:  {model.peak_gflops:.1f} GFLOP/s ({peak.get('vector_bits')}-bit vectors,"
            f" {'FMA' if peak.get('fma') else 'mul+add'}, best of {len(peak.get('runs_s', []))}"
            " runs)",
            f"bandwidth:  {model.bandwidth_gbs:.1f} GB/s (STREAM triad, "
            f"{stream.get('array_mib')} MiB per array, best of {len(stream.get('runs_s', []))}"
            " runs)",
            f"ridge:      {model.ridge_intensity:.2f} flop/byte",
            *([f"WARNING:    {peak['warning']}"] if peak.get("warning") else []),
            f"measured:   {model.measured_at}",
        ]
    )


def cache_label(c: Mapping[str, Any]) -> str:
    """``L1d 32 KiB per core``, ``L3 32 MiB shared by 16 CPUs``."""
    kind = {"Data": "d", "Instruction": "i"}.get(str(c.get("type")), "")
    size = int(c.get("size_kib") or 0)
    text = f"{size // 1024} MiB" if size >= 1024 and size % 1024 == 0 else f"{size} KiB"
    shared = int(c.get("shared_by") or 1)
    where = "per core" if shared <= 1 else f"shared by {shared} CPUs"
    return f"L{c.get('level')}{kind} {text} {where}"
