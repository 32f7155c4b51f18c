"""Which node timed every figure of a campaign, and whether they can be compared.

On a Slurm cluster the timing steps of one campaign run on several nodes (the pilot
pool). A figure is only comparable with one taken on the same CPU model: the pool pins
the campaign's CPU model (hpcagents.cluster.pilot), and this module is how a user checks it
afterwards, from the artifacts alone: every evaluation.json and final_round.json names its
host, Slurm node and job, and CPU model in its provenance.

    python -m hpcagents.views.nodetypes [results]        # one line per kernel and CPU model
    python -m hpcagents.views.nodetypes results --all    # one line per figure

Exit status 1 when a kernel's figures come from more than one CPU model: they are listed
apart and must not be compared.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from hpcagents.core.layout import RESULTS, CampaignLayout


@dataclass(frozen=True)
class Figure:
    """Where one timed artifact was measured."""

    kernel: str
    path: str
    node: str
    job: str | None
    cpu_model: str


def figures(results: Path) -> list[Figure]:
    """Every evaluation and final round under ``results`` with its node and CPU model
    (a half-written or foreign file is skipped: it is not a figure)."""
    out = []
    kernels = [CampaignLayout(results).kernel(k) for k in CampaignLayout(results).kernels()]
    paths = [p for k in kernels for p in k.evaluations()]
    paths += [p for k in kernels for p in k.final_rounds()]
    for path in paths:
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        prov = record.get("provenance") or {}
        slurm = prov.get("slurm") or {}
        if not prov.get("cpu_model"):
            continue
        out.append(
            Figure(
                kernel=str(record.get("kernel") or path.relative_to(results).parts[0]),
                path=str(path.relative_to(results)),
                node=str(slurm.get("node") or prov.get("host") or "?"),
                job=prov.get("slurm_job_id"),
                cpu_model=str(prov["cpu_model"]),
            )
        )
    return out


def mixed_kernels(figs: list[Figure]) -> dict[str, set[str]]:
    """Kernels whose figures come from more than one CPU model, with those models."""
    models: dict[str, set[str]] = defaultdict(set)
    for fig in figs:
        models[fig.kernel].add(fig.cpu_model)
    return {k: m for k, m in models.items() if len(m) > 1}


def report(figs: list[Figure], every: bool = False) -> str:
    lines = []
    groups: dict[tuple[str, str], list[Figure]] = defaultdict(list)
    for fig in figs:
        groups[(fig.kernel, fig.cpu_model)].append(fig)
    for (kernel, model), members in sorted(groups.items()):
        nodes = sorted({f.node for f in members})
        lines.append(f"{kernel}: {len(members)} figures on {model} (nodes {', '.join(nodes)})")
        if every:
            lines += [f"  {f.path}: node {f.node}, Slurm job {f.job}" for f in members]
    for kernel, models in sorted(mixed_kernels(figs).items()):
        lines.append(
            f"{kernel}: figures from {len(models)} CPU models ({'; '.join(sorted(models))}): "
            "never compare across them; time the kernel on one node type (slurm_partition "
            "or slurm_extra --constraint in profiles/slurm)"
        )
    return "\n".join(lines) if lines else "no timed figures found"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hpcagents.views.nodetypes", description=__doc__
    )
    parser.add_argument("results", nargs="?", default=RESULTS, type=Path)
    parser.add_argument("--all", action="store_true", help="one line per figure")
    args = parser.parse_args(argv)
    figs = figures(args.results)
    print(report(figs, every=args.all))
    return 1 if mixed_kernels(figs) else 0


if __name__ == "__main__":
    sys.exit(main())
