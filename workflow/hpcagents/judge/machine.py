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
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hpcagents.core.artifacts import ArtifactError, read_json, write_json
from hpcagents.core.layout import CampaignLayout

BENCH_DIR = Path(__file__).resolve().parent / "bench_c"
#: Relative to the campaign's working directory, beside the effective config, so the
#: figures the prompts quoted stay with the campaign (and an exact replay finds them).
DEFAULT_CACHE_DIR = CampaignLayout().machine_cache()
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
    topology: dict[str, Any] = field(default_factory=dict)  # cores, SMT, NUMA of this job

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


def _size_kib(text: str) -> int:
    """``32K`` (sysfs), ``32 KiB`` or ``1M`` in KiB; a bare number is bytes."""
    m = re.fullmatch(r"(\d+)\s*([KMG]?)(?:I?B)?", text.strip().upper())
    if not m:
        return 0
    number, unit = int(m.group(1)), m.group(2)
    return number // 1024 if not unit else number * {"K": 1, "M": 1024, "G": 1024**2}[unit]


def _read(path: Path) -> str:
    return path.read_text().strip()


def _cpu_set(text: str) -> set[int]:
    """``0-3,8,10-11`` as a set of CPU numbers."""
    out: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def job_cpus() -> set[int]:
    """The CPUs this process may run on (its affinity: a Slurm job's or a cgroup's cpuset)."""
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:
        return set(range(os.cpu_count() or 1))


def in_vm(flags: set[str] | None = None) -> bool:
    """A hypervisor is visible (the ``hypervisor`` CPU flag): cache sizes and sharing then
    come from the hypervisor's CPUID, i.e. they describe the host's silicon."""
    return "hypervisor" in (cpu_flags() if flags is None else flags)


def caches(
    cpu_dir: Path = Path("/sys/devices/system/cpu"),
    cpus: set[int] | None = None,
    vm: bool | None = None,
) -> tuple[dict[str, Any], ...]:
    """Cache levels as THIS JOB can use them, from sysfs.

    Read from the job's first CPU (not cpu0, which a cpuset may exclude), each level with:
    ``shared_by`` the CPUs the OS says share one instance; ``job_cpus`` how many of them
    are this job's; ``instances`` how many instances the job's CPUs touch (e.g. one L2 per
    core); ``share_kib`` the job's share of one instance when others' CPUs share it
    (size x job_cpus / shared_by: what a job on 4 of a socket's 32 CPUs can count on);
    and ``host_figure`` in a VM, where size and sharing come from the hypervisor's CPUID:
    a 2-vCPU guest sees the host's L3 "shared by 2 CPUs" although other guests' cores
    share it too, so that figure is the host's, not this job's.
    """
    cpus = job_cpus() if cpus is None else cpus
    vm = in_vm() if vm is None else vm
    first = min(cpus) if cpus else 0
    out = []
    for index in sorted((cpu_dir / f"cpu{first}" / "cache").glob("index*")):
        try:
            level = int(_read(index / "level"))
            kind = _read(index / "type")
            size = _size_kib(_read(index / "size"))
            sharing = _cpu_set(_read(index / "shared_cpu_list"))
        except (OSError, ValueError):
            continue
        instances = set()
        for cpu in cpus:
            try:
                instances.add(
                    _read(cpu_dir / f"cpu{cpu}" / "cache" / index.name / "shared_cpu_list")
                )
            except OSError:
                pass
        shared = max(1, len(sharing))
        mine = max(1, len(sharing & cpus))
        entry = {
            "level": level,
            "type": kind,
            "size_kib": size,
            "shared_by": shared,
            "job_cpus": mine,
            "instances": max(1, len(instances)),
            "share_kib": size * mine // shared,
            "host_figure": bool(vm and (level >= 3 or shared > 1)),
        }
        out.append(entry)
    return tuple(out) or _lscpu_caches()


def topology(
    cpu_dir: Path = Path("/sys/devices/system/cpu"),
    node_dir: Path = Path("/sys/devices/system/node"),
    cpus: set[int] | None = None,
) -> dict[str, Any]:
    """The job's CPUs as hardware: physical cores (SMT siblings counted once), sockets,
    NUMA nodes with the job's CPUs and memory of each, and whether a hypervisor is seen."""
    cpus = job_cpus() if cpus is None else cpus
    cores: set[tuple[str, str]] = set()
    sockets: set[str] = set()
    for cpu in cpus:
        top = cpu_dir / f"cpu{cpu}" / "topology"
        try:
            pkg = _read(top / "physical_package_id")
            cores.add((pkg, _read(top / "core_id")))
            sockets.add(pkg)
        except OSError:
            cores.add(("?", str(cpu)))
    numa = []
    for node in sorted(node_dir.glob("node[0-9]*"), key=lambda p: int(p.name[4:])):
        try:
            node_cpus = _cpu_set(_read(node / "cpulist"))
        except (OSError, ValueError):
            continue
        mem_gib = None
        try:
            for line in (node / "meminfo").read_text().splitlines():
                if "MemTotal:" in line:
                    mem_gib = round(int(line.split()[-2]) / 2**20, 1)
        except (OSError, ValueError, IndexError):
            pass
        mine = len(node_cpus & cpus)
        numa.append(
            {
                "node": int(node.name[4:]),
                "cpus": len(node_cpus),
                "job_cpus": mine,
                "memory_gib": mem_gib,
            }
        )
    return {
        "job_cpus": len(cpus),
        "physical_cores": len(cores),
        "smt": round(len(cpus) / max(1, len(cores)), 2),
        "sockets": max(1, len(sockets)),
        "numa": numa,
        "numa_nodes_used": sum(1 for n in numa if n["job_cpus"]) or 1,
        "vm": in_vm(),
        "online_cpus": os.cpu_count() or len(cpus),
    }


def topology_label(t: Mapping[str, Any]) -> str:
    """One sentence for the prompts: the job's cores, SMT, sockets and NUMA nodes."""
    smt = float(t.get("smt") or 1)
    numa = [n for n in t.get("numa", []) if n.get("job_cpus")]
    parts = [
        f"this job runs on {t.get('job_cpus')} CPU(s) of {t.get('online_cpus')} online: "
        f"{t.get('physical_cores')} physical core(s)"
        + (f" with {smt:g} hardware threads each" if smt > 1 else "")
        + f", {t.get('sockets')} socket(s)"
    ]
    if numa:
        parts.append(
            f"{len(numa)} NUMA node(s) ("
            + "; ".join(
                f"node {n['node']}: {n['job_cpus']} of its {n['cpus']} CPUs"
                + (f", {n['memory_gib']:g} GiB" if n.get("memory_gib") else "")
                for n in numa
            )
            + ")"
            + (": first-touch placement matters" if len(numa) > 1 else "")
        )
    if t.get("vm"):
        parts.append("a virtual machine (the CPU flags show a hypervisor)")
    return "Topology: " + "; ".join(parts) + "."


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


def _build(
    cc: str, cflags: Sequence[str], name: str, workdir: Path, extra: Sequence[str] = ()
) -> Path:
    exe = workdir / (Path(name).stem + "".join(e.replace("=", "") for e in extra))
    cmd = [cc, *cflags, *extra, str(BENCH_DIR / name), "-o", str(exe)]
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


def mem_available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo, in bytes (None where it cannot be read)."""
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
    avail = mem_available_bytes()
    if avail:
        per_array = min(per_array, avail // 12)
    return max(1024, per_array // 8)


#: N threads under this share of N x one thread: a busy node, or a lower all-core clock.
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
            f"{peak['threads']} x one thread ({single:.1f} GFLOP/s): the node was busy, or "
            "its cores clock lower when all run wide vectors (then this is the peak); "
            "measure again on a quiet node to tell (hpcagents machine --refresh)"
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
        if peak.get("vector_bits") == 512:
            # the 256-bit variant too: faster on cores with one 512-bit FMA unit but two
            # 256-bit ones, or a lower clock for 512-bit work; the better one is the peak
            narrow = _peak(
                _build(cc, cflags, SOURCES[0], work, ("-DFMA_BITS=256",)), threads, settings
            )
            variants = {"512": peak["gflops"], "256": narrow["gflops"]}
            if narrow["gflops"] > peak["gflops"]:
                peak = narrow
            peak["variants_gflops"] = variants
        widest = 512 if "variants_gflops" in peak else int(peak["vector_bits"])
        peak["widest_vector_bits"] = widest  # what the flags allow (the prompts say it)
        peak["spec"] = spec_peak(int(peak["threads"]), widest, peak)
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
        topology=topology(),
        peak_gflops=round(float(peak["gflops"]), 3),
        bandwidth_gbs=round(float(stream["gbs"]), 3),
        peak=peak,
        stream=stream,
        measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        key=key,
        settings=asdict(settings),
    )


# ---------------------------------------------------------------- the peak, checked


def clock_ghz() -> tuple[float | None, str]:
    """The cores' clock and where it came from: cpufreq's maximum (the boost clock), else
    the model name's "@ 2.10GHz" (base), else /proc/cpuinfo's "cpu MHz" (in a VM, the
    nominal clock the hypervisor reports)."""
    try:
        khz = int(_read(Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")))
        if khz > 0:
            return khz / 1e6, "cpufreq cpuinfo_max_freq (maximum boost)"
    except (OSError, ValueError):
        pass
    m = re.search(r"@\s*([\d.]+)\s*GHz", cpu_model())
    if m:
        return float(m.group(1)), "the CPU model name (base clock)"
    mhz = cpu_mhz()
    if mhz:
        return mhz / 1000, "/proc/cpuinfo cpu MHz (nominal; cores may boost above it)"
    return None, "unknown"


def fma_units(vector_bits: int) -> tuple[int, int, str]:
    """(FMA units per core, datapath bits, why): what /proc/cpuinfo does not say, assumed
    from the vendor and family, and said aloud with the figure."""
    vendor, family = _cpuinfo_field("vendor_id") or "", int(_cpuinfo_field("cpu family") or 0)
    if vendor == "AuthenticAMD" and vector_bits > 256 and family <= 0x19:
        return (
            2,
            256,
            f"AMD family {family:#x}: two 256-bit FMA pipes (a 512-bit FMA in two halves)",
        )
    if vector_bits > 256:
        return (
            2,
            vector_bits,
            f"{vendor} family {family:#x}: two {vector_bits}-bit FMA units (Xeon Gold/Platinum"
            " class; Bronze/Silver parts have one)",
        )
    return 2, vector_bits, f"{vendor} family {family:#x}: two {vector_bits}-bit FMA units"


def spec_peak(threads: int, vector_bits: int, measured: Mapping[str, Any]) -> dict[str, Any]:
    """cores x FMA units x doubles per datapath x 2 flops x clock, beside the measured
    figure: a measured peak far below it means a busy node, a low AVX clock or that the
    benchmark missed ports; far above it, that the cores boost above the clock read."""
    ghz, clock_from = clock_ghz()
    units, bits, why = fma_units(vector_bits)
    phys = topology().get("physical_cores") or threads
    cores = min(threads, phys)
    rec: dict[str, Any] = {
        "cores": cores,
        "fma_units": units,
        "datapath_bits": bits,
        "clock_ghz": ghz,
        "clock_from": clock_from,
        "assumption": why,
        "gflops": None,
        "ratio": None,
    }
    if ghz and measured.get("fma"):
        rec["gflops"] = round(cores * units * (bits / 64) * 2 * ghz, 3)
        rec["ratio"] = round(float(measured["gflops"]) / rec["gflops"], 3)
        if rec["ratio"] < 0.7:
            rec["warning"] = (
                f"the FMA benchmark reached {rec['ratio']:.0%} of {rec['gflops']:.0f} GFLOP/s ("
                f"{cores} cores x {units} FMA x {bits // 64} doubles x 2 x {ghz:.2f} GHz): a busy "
                "node, a lower clock under vector load, or fewer FMA units than assumed"
            )
        elif rec["ratio"] > 1.3:
            rec["note"] = "above the spec figure: the cores boost above the clock read"
    return rec


def check_peak(
    cache_dir: Path, model: MachineModel, reference_gflops: float
) -> tuple[MachineModel, dict[str, Any]]:
    """The reference's GFLOP/s against the model's peak.

    A library reaching more than the "peak" proves the peak wrong (the FMA benchmark ran
    on a busy node, or missed ports). Then the model is measured again, and if the
    library still beats it, the peak is raised to what the library reached, recorded as
    such in the cached model (``peak.floor``), so no later figure is set against a peak
    below what runs on the node. Returns the model to use and the check's record.
    """
    rec: dict[str, Any] = {
        "reference_gflops": round(reference_gflops, 3),
        "peak_gflops": model.peak_gflops,
        "pct_of_peak": round(100.0 * reference_gflops / model.peak_gflops, 2),
        "status": "ok",
    }
    if reference_gflops <= model.peak_gflops:
        return model, rec
    first = model.peak_gflops
    model = machine_model(cache_dir, model.cc, model.cflags, model.threads, refresh=True)
    rec["status"] = "exceeded"
    rec["remeasured_peak_gflops"] = model.peak_gflops
    if reference_gflops > model.peak_gflops:
        peak = {
            **model.peak,
            "floor": {
                "gflops": round(reference_gflops, 3),
                "fma_gflops": model.peak_gflops,
                "why": "the reference reached more than the FMA benchmark on this node",
            },
        }
        # rounded up, so the reference itself never reads above its own peak
        model = replace(model, peak_gflops=math.ceil(reference_gflops * 1000) / 1000, peak=peak)
        path = _cache_path(Path(cache_dir), model.host, model.key)
        write_json(path, {**model.to_dict(), "threads_requested": model.threads}, "machine")
    rec["peak_gflops"] = model.peak_gflops
    rec["reason"] = (
        f"the reference ran {reference_gflops:.1f} GFLOP/s, above the model's peak "
        f"{first:.1f}: the model was measured again ({rec['remeasured_peak_gflops']:.1f})"
        + (" and its peak raised to the reference's figure" if model.peak.get("floor") else "")
    )
    return model, rec


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
        # a rounding hair above the roof is not a finding
        **(
            {"above_roof": above_roof(memory_roof < peak)}
            if achieved > attainable * (1 + 1e-9)
            else {}
        ),
    }


def above_roof(memory_bound: bool) -> str:
    """Why a figure passes 100% of the roofline, in words a person can act on."""
    if memory_bound:
        return (
            "above the memory roof: caches serve more than the kernel's byte model counts at "
            "this size, or the bandwidth was measured low on a busy host (measure it again: "
            "hpcagents machine --refresh)"
        )
    return (
        "above the measured peak: the peak is too low (measure it again: hpcagents "
        "machine --refresh)"
    )


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
            *([f"topology:   {topology_label(model.topology)[10:]}"] if model.topology else []),
            *([f"peak check: {spec_text(peak)}"] if peak.get("spec") else []),
            *([f"WARNING:    {peak['warning']}"] if peak.get("warning") else []),
            *(
                [f"WARNING:    {peak['spec']['warning']}"]
                if peak.get("spec", {}).get("warning")
                else []
            ),
            f"measured:   {model.measured_at}",
        ]
    )


def _kib(size: int) -> str:
    if size >= 1024 and size % 1024 == 0:
        return f"{size // 1024} MiB"
    if size >= 1024:
        return f"{size / 1024:.1f} MiB"
    return f"{size} KiB"


def spec_text(peak: Mapping[str, Any]) -> str:
    """The measured peak beside cores x FMA units x width x 2 x clock."""
    spec = peak.get("spec") or {}
    variants = peak.get("variants_gflops")
    tried = (
        " (512-bit " + f"{variants['512']:.1f}, 256-bit {variants['256']:.1f})" if variants else ""
    )
    if not spec.get("gflops"):
        return f"no spec figure (clock: {spec.get('clock_from', 'unknown')}){tried}"
    floor = peak.get("floor")
    return (
        f"spec {spec['gflops']:.1f} GFLOP/s = {spec['cores']} cores x {spec['fma_units']} FMA"
        f" x {spec['datapath_bits'] // 64} doubles x 2 x {spec['clock_ghz']:.2f} GHz"
        f" ({spec['clock_from']}); measured {100 * spec['ratio']:.0f}% of it{tried}"
        + (f"; raised to {floor['gflops']:.1f}: {floor['why']}" if floor else "")
    )


def cache_label(c: Mapping[str, Any]) -> str:
    """``L1d 32 KiB per core``, ``L3 32 MiB shared by 16 CPUs``, and what THIS job can
    use of it: ``4 of them this job's (a fair share 8 MiB)``, or that the figure is the
    host's as a hypervisor reports it."""
    kind = {"Data": "d", "Instruction": "i"}.get(str(c.get("type")), "")
    size = int(c.get("size_kib") or 0)
    shared = int(c.get("shared_by") or 1)
    where = "per core" if shared <= 1 else f"shared by {shared} CPUs"
    if shared > 1 and c.get("job_cpus") is not None:
        mine = int(c["job_cpus"])
        if mine < shared:
            where += f", {mine} of them this job's (its fair share {_kib(int(c['share_kib']))})"
    if int(c.get("instances") or 1) > 1:
        where += f", {c['instances']} instances across this job's CPUs"
    if c.get("host_figure"):
        return (
            f"L{c.get('level')}{kind} {_kib(size)}, the host's figure: the hypervisor reports"
            f" it {where}, but other guests' cores may share it too, so this VM cannot count"
            " on all of it"
        )
    return f"L{c.get('level')}{kind} {_kib(size)} {where}"
