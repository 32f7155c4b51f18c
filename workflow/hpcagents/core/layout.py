"""Every path of a campaign, named once.

Why: the results tree (``results/<kernel>/iter<i>/pg<j>/attempt<a>/...``) is a contract
that the rules, the steps, ``status``, the reports and the tests all read. When each of
them spelled it (and parsed it back) on its own, a change of layout touched a dozen
files and a slip in one of them went unnoticed. Here is the one place that builds and
parses those paths; everything else asks a :class:`CampaignLayout` (a whole results
folder) or a :class:`KernelLayout` (one kernel's folder under it).

Both are plain values (no global state): ``CampaignLayout(Path("results"))`` is the
layout of the campaign run in the current directory. Methods take ``int | str`` for the
indices so the rules can build Snakemake patterns with the same calls
(``CampaignLayout(Path("results")).kernel("{kernel}").source("{i}", "{j}", "{a}")``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

#: The results folder of a campaign, relative to the directory Snakemake runs in.
RESULTS = Path("results")
#: The campaign's own state under the results folder (effective configs, made-by record,
#: probes, pilots, launched servers, machine models, the run record).
STATE = ".hpcagents"
#: The response cache's default place (config key ``llm.cache_dir``).
LLM_CACHE = RESULTS / ".llm-cache"

Index = int | str

#: The artifacts' file names (their places are the methods below).
PLAN, BEST, ARCHIVE, FINAL_ROUND = "plan.json", "best.json", "archive.json", "final_round.json"
GENERATION, EVALUATION = "generation.json", "evaluation.json"
SUMMARY, REPORT_MD, REPORT_HTML = "summary.json", "report.md", "report.html"

_ITER, _PG, _ATTEMPT = "iter", "pg", "attempt"
_ATTEMPT_RE = re.compile(r"iter(\d+)/pg(\d+)/attempt(\d+)(?:/|$)")


def _index(name: str, prefix: str) -> int:
    """``7`` for ``iter7`` with prefix ``iter``; -1 for a name that is not one."""
    rest = name[len(prefix) :]
    return int(rest) if name.startswith(prefix) and rest.isdigit() else -1


def _numbered(parent: Path, prefix: str) -> list[tuple[int, Path]]:
    """The sub-folders ``<prefix><n>`` of ``parent``, in numeric order."""
    if not parent.is_dir():
        return []
    found = [(_index(p.name, prefix), p) for p in parent.iterdir() if p.is_dir()]
    return sorted((i, p) for i, p in found if i >= 0)


@dataclass(frozen=True)
class AttemptKey:
    """Where an attempt sits in the tree: kernel, iteration, PG, attempt."""

    kernel: str
    iteration: int
    pg: int
    attempt: int


@dataclass(frozen=True)
class KernelLayout:
    """One kernel's folder of a campaign: ``<results>/<kernel>/``."""

    directory: Path

    @property
    def name(self) -> str:
        return self.directory.name

    @property
    def source_name(self) -> str:
        """The candidate file of kernel <name> is always <name>.c (checked at start)."""
        return f"{self.name}.c"

    # ---- per kernel
    def summary(self) -> Path:
        return self.directory / SUMMARY

    def report_md(self) -> Path:
        return self.directory / REPORT_MD

    def report_html(self) -> Path:
        return self.directory / REPORT_HTML

    def bench_size_dir(self) -> Path:
        """Frozen node-sized bench sizes, one file per node type (node_size)."""
        return self.directory / "bench_size"

    def logs(self) -> Path:
        return self.directory / "logs"

    # ---- per iteration
    def iter_dir(self, i: Index) -> Path:
        return self.directory / f"{_ITER}{i}"

    def plan(self, i: Index) -> Path:
        return self.iter_dir(i) / PLAN

    def best(self, i: Index) -> Path:
        return self.iter_dir(i) / BEST

    def best_source(self, i: Index) -> Path:
        """The selected kernel's source, ``iter<i>/best/<kernel>.c`` (select writes it)."""
        return self.iter_dir(i) / "best" / self.source_name

    def archive(self, i: Index) -> Path:
        return self.iter_dir(i) / ARCHIVE

    def final_round(self, i: Index) -> Path:
        return self.iter_dir(i) / FINAL_ROUND

    # ---- per PG and attempt
    def pg_dir(self, i: Index, j: Index) -> Path:
        return self.iter_dir(i) / f"{_PG}{j}"

    def attempt_dir(self, i: Index, j: Index, a: Index) -> Path:
        return self.directory / self.attempt_id(i, j, a)

    @staticmethod
    def attempt_id(i: Index, j: Index, a: Index) -> str:
        """An attempt's name inside its kernel's folder, ``iter<i>/pg<j>/attempt<a>``
        (the archive names its elites so)."""
        return f"{_ITER}{i}/{_PG}{j}/{_ATTEMPT}{a}"

    def source(self, i: Index, j: Index, a: Index) -> Path:
        return self.attempt_dir(i, j, a) / self.source_name

    def generation(self, i: Index, j: Index, a: Index) -> Path:
        return self.attempt_dir(i, j, a) / GENERATION

    def evaluation(self, i: Index, j: Index, a: Index) -> Path:
        return self.attempt_dir(i, j, a) / EVALUATION

    # ---- logs (Snakemake's log: files)
    def log(self, i: Index | None, what: str) -> Path:
        """``logs/iter<i>/<what>.log`` (``logs/<what>.log`` with ``i`` None)."""
        base = self.logs() if i is None else self.logs() / f"{_ITER}{i}"
        return base / f"{what}.log"

    def attempt_log(self, i: Index, j: Index, a: Index, step: str) -> Path:
        return self.log(i, f"{_PG}{j}.{_ATTEMPT}{a}.{step}")

    # ---- reading the tree back
    def iterations(self) -> list[tuple[int, Path]]:
        """The iteration folders that exist, in order."""
        return _numbered(self.directory, _ITER)

    def pgs(self, i: Index) -> list[tuple[int, Path]]:
        return _numbered(self.iter_dir(i), _PG)

    def attempts(self, i: Index, j: Index) -> list[tuple[int, Path]]:
        return _numbered(self.pg_dir(i, j), _ATTEMPT)

    def evaluations(self) -> list[Path]:
        """Every attempt's evaluation.json that exists, in tree order."""
        return [
            self.evaluation(i, j, a)
            for i, _ in self.iterations()
            for j, _ in self.pgs(i)
            for a, _ in self.attempts(i, j)
            if self.evaluation(i, j, a).is_file()
        ]

    def final_rounds(self) -> list[Path]:
        """Every iteration's final_round.json that exists, in order."""
        return [self.final_round(i) for i, _ in self.iterations() if self.final_round(i).is_file()]


@dataclass(frozen=True)
class CampaignLayout:
    """A campaign's results folder (``results/`` where Snakemake runs, by default)."""

    root: Path = RESULTS

    def kernel(self, name: str) -> KernelLayout:
        return KernelLayout(self.root / name)

    def kernels(self) -> list[str]:
        """Kernels with results here (their baseline iteration exists), sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / f"{_ITER}0").is_dir())

    def finished(self) -> list[KernelLayout]:
        """Kernels whose campaign wrote its summary, sorted."""
        if not self.root.is_dir():
            return []
        return [
            KernelLayout(p)
            for p in sorted(self.root.iterdir())
            if p.is_dir() and KernelLayout(p).summary().is_file()
        ]

    # ---- the campaign's own state: <results>/.hpcagents/
    @property
    def state(self) -> Path:
        return self.root / STATE

    def effective_config(self, digest: str) -> Path:
        """The validated config of a run, named by its content (never rewritten)."""
        return self.state / f"config-{digest}.json"

    def effective_configs(self) -> list[Path]:
        """Every effective config written here, oldest first."""
        if not self.state.is_dir():
            return []
        return sorted(self.state.glob("config-*.json"), key=lambda p: p.stat().st_mtime)

    def current_config(self) -> Path:
        """Points at the effective config of the last run that started."""
        return self.state / "current-config.json"

    def made_by(self) -> Path:
        """What made these results: the settings and kernel specs of the first run."""
        return self.state / "made-by.json"

    def superseded(self, stamp: str) -> Path:
        """Where ``--accept-changes`` moves figures made under old settings."""
        return self.state / "superseded" / stamp

    def pilot(self) -> Path:
        return self.state / "pilot"

    def servers(self) -> Path:
        """What the start-up probe learned about each server."""
        return self.state / "servers"

    def launched(self) -> Path:
        """Servers the campaign launched itself (Slurm jobs) and their resolved config."""
        return self.state / "launched"

    def machine_cache(self) -> Path:
        """Measured machine models (peak, bandwidth) per host, flags and threads."""
        return self.state / "machine"

    def run_record(self) -> Path:
        """``hpcagents run``'s record of the Snakemake it started."""
        return self.state / "run.json"

    # ---- parsing paths back
    @staticmethod
    def attempt_of(path: Path | str) -> AttemptKey | None:
        """The attempt a path lies in (the attempt folder or any file in it); None if it
        does not lie in one. The kernel is the folder above ``iter<i>``."""
        text = Path(path).as_posix()
        found = list(_ATTEMPT_RE.finditer(text))
        if not found:
            return None
        m = found[-1]
        kernel = Path(text[: m.start()]).name
        return AttemptKey(kernel, int(m.group(1)), int(m.group(2)), int(m.group(3)))

    @staticmethod
    def source_beside(evaluation_json: Path | str, source_name: str) -> Path:
        """The candidate source of the attempt whose evaluation.json is given."""
        return Path(evaluation_json).parent / source_name

    @staticmethod
    def kernel_dir_of(path: Path | str) -> Path:
        """``<results>/<kernel>`` from an artifact path below it (``.../iter<i>/...``);
        the path's parent for one that is not below an iteration."""
        path = Path(path).resolve()
        for parent in path.parents:
            if _index(parent.name, _ITER) >= 0:
                return parent.parent
        return path.parent
