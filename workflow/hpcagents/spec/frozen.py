"""A results folder knows what made it: the settings its figures depend on, kept.

Why: rerunning a campaign in the same folder with another ``bench_size`` or ``repeats``
used to print the old figures as if they were new. The first run that starts in a
results folder records here (``results/.hpcagents/made-by.json``) the settings that
change figures (sizes, repeats, warmup, threads, flags, compiler, reference library,
finalists) and each kernel's spec (kernel.yaml, the baseline source, the reference
file). A later run whose settings differ stops before any job, naming each changed key
old -> new and the two ways on: another results folder, or ``--accept-changes``, which
records the change and moves the figures made under the old settings aside
(``results/.hpcagents/superseded/<time>/``) so every evaluation, final round, selection
and summary of the affected kernels is made again (the LLM steps replay their answers
from the response cache where the prompt is unchanged). Settings that do not change
figures (servers, concurrency, iterations, PGs, seed) are allowed and recorded.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from hpcagents.core.artifacts import write_text_atomic
from hpcagents.core.layout import BEST, EVALUATION, FINAL_ROUND, REPORT_MD, SUMMARY, CampaignLayout
from hpcagents.spec.config import CampaignConfig, ConfigError
from hpcagents.spec.kernelspec import kernel_snapshot

#: Set (to 1) by ``hpcagents run --accept-changes`` / ``demo --accept-changes`` for the
#: Snakemake it starts: the Snakefile's guard then accepts the changes it finds.
ACCEPT_ENV = "HPCAGENTS_ACCEPT_CHANGES"

#: Config keys whose value changes a figure (dotted paths into the config).
FIGURE_KEYS = (
    "build.cc",
    "build.cflags",
    "evaluation.blas",
    "evaluation.repeats",
    "evaluation.warmup",
    "evaluation.bench_size",
    "evaluation.threads",
    "evaluation.finalists",
)
#: Keys recorded when they change, but allowed: they change what runs, not a figure.
OTHER_KEYS = (
    "campaign.iterations",
    "campaign.pgs",
    "campaign.max_repairs",
    "campaign.seed",
    "evaluation.timeout_s",
    "llm.servers",
)
#: Timing artifacts made under the settings above (moved aside on --accept-changes).
TIMED = (EVALUATION, FINAL_ROUND, BEST, SUMMARY, REPORT_MD)


@dataclass(frozen=True)
class Change:
    key: str
    old: Any
    new: Any
    kernel: str | None = None  # None: every kernel's figures depend on it

    def line(self) -> str:
        return f"{self.key}: {_show(self.old)} -> {_show(self.new)}"


def _show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 120 else text[:117] + "..."


def _get(raw: dict[str, Any], dotted: str) -> Any:
    node: Any = raw
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def kernel_settings(cfg: CampaignConfig, name: str) -> dict[str, Any]:
    """What of a kernel's folder its figures depend on: kernel.yaml's keys and the hashes
    of the files it names, taken from the very snapshot the run freezes
    (:func:`~hpcagents.spec.kernelspec.kernel_snapshot`), so the folder is read one way."""
    snap = (cfg.frozen_kernels or {}).get(name) or kernel_snapshot(name, cfg.kernel_search)
    spec = yaml.safe_load(snap["kernel_yaml"]) or {}
    # 16 hex digits, as the records of earlier runs hold them (a longer hash would read
    # as a change of every file)
    files = {f: d[:16] for f, d in snap["sha256"].items() if f != "kernel.yaml"}
    return {"folder": snap["directory"], "spec": spec, "files": files}


def _servers(servers: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """The servers as recorded: the scripted stand-in's address (a free port, new on
    every demo) is not a change worth recording."""
    out = []
    for s in servers or []:
        if str(s.get("model", "")).startswith("scripted"):
            s = {k: v for k, v in s.items() if k != "base_url"}
        out.append(s)
    return out


def settings(cfg: CampaignConfig) -> dict[str, Any]:
    raw = cfg.raw
    other = {k: _get(raw, k) for k in OTHER_KEYS}
    other["llm.servers"] = _servers(other["llm.servers"])
    return {
        "figures": {k: _get(raw, k) for k in FIGURE_KEYS},
        "other": other,
        "kernels": {name: kernel_settings(cfg, name) for name in cfg.kernels},
    }


def figure_changes(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    """Changes that make the recorded figures stale. A kernel new to the campaign is not
    a change (it has no figures yet)."""
    out = [
        Change(k, old["figures"].get(k), new["figures"].get(k))
        for k in FIGURE_KEYS
        if old["figures"].get(k) != new["figures"].get(k)
    ]
    for name, now in new["kernels"].items():
        was = old["kernels"].get(name)
        if was is None:
            continue
        keys = sorted(set(was["spec"]) | set(now["spec"]))
        for key in keys:
            if was["spec"].get(key) != now["spec"].get(key):
                out.append(
                    Change(
                        f"kernel {name}: kernel.yaml {key}",
                        was["spec"].get(key),
                        now["spec"].get(key),
                        name,
                    )
                )
        for fname in sorted(set(was["files"]) | set(now["files"])):
            if was["files"].get(fname) != now["files"].get(fname):
                out.append(
                    Change(
                        f"kernel {name}: {fname} (sha256)",
                        was["files"].get(fname),
                        now["files"].get(fname),
                        name,
                    )
                )
    return out


def other_changes(old: dict[str, Any], new: dict[str, Any]) -> list[Change]:
    return [
        Change(k, old["other"].get(k), new["other"].get(k))
        for k in OTHER_KEYS
        if old["other"].get(k) != new["other"].get(k)
    ]


def read_record(results: Path) -> dict[str, Any] | None:
    """The record of what made the results folder ``results`` (None: none yet)."""
    try:
        rec = json.loads(CampaignLayout(Path(results)).made_by().read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) and "settings" in rec else None


def _write(results: Path, rec: dict[str, Any]) -> None:
    path = CampaignLayout(Path(results)).made_by()
    write_text_atomic(path, json.dumps(rec, indent=2, sort_keys=True) + "\n")


def refusal(results: Path, changes: list[Change]) -> str:
    lines = "\n".join(f"  {c.line()}" for c in changes)
    return (
        f"the figures in {results} were made under other settings; these changed:\n{lines}\n"
        "Nothing was run. Either keep these results and start a new results folder "
        "(`--dir NEW_FOLDER`, or run from another folder), or rerun with "
        "--accept-changes: the change is recorded in "
        f"{CampaignLayout(results).made_by()} and every figure that depends on it is made again "
        "(LLM answers are replayed from the response cache where the prompt is unchanged)"
    )


def supersede(results: Path, kernels: list[str], stamp: str) -> int:
    """Move the timing artifacts of ``kernels`` aside; return how many were moved."""
    dest = CampaignLayout(results).superseded(stamp)
    moved = 0
    for name in kernels:
        kdir = CampaignLayout(results).kernel(name).directory
        if not kdir.is_dir():
            continue
        for path in sorted(kdir.rglob("*")):
            if path.name not in TIMED or not path.is_file():
                continue
            target = dest / path.relative_to(results)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), target)
            moved += 1
    return moved


def pending(cfg: CampaignConfig, results: Path) -> list[Change]:
    """The figure-changing differences between ``cfg`` and what made ``results``."""
    rec = read_record(Path(results))
    return figure_changes(rec["settings"], settings(cfg)) if rec else []


def precheck(config_path: Path, results: Path, accept: bool) -> str | None:
    """For ``hpcagents run``/``demo`` before they start anything: the refusal (None: go).
    The Snakefile checks again (:func:`guard`), whoever starts it."""
    from hpcagents.spec.config import load_config

    if accept:
        return None
    try:
        changes = pending(load_config(config_path), results)
    except (ConfigError, ValueError):
        return None  # the config's own error is reported by whoever loads it next
    return refusal(results.resolve(), changes) if changes else None


def guard(cfg: CampaignConfig, results: Path, accept: bool) -> list[str]:
    """At parse time, before any job: refuse (ConfigError) a run whose figure settings
    differ from the recorded ones, unless ``accept``; then re-record and move the stale
    figures aside. Returns notes to print. The first run is recorded by :func:`record`."""
    results = Path(results).resolve()
    layout = CampaignLayout(results)
    rec = read_record(results)
    if rec is None:
        return []
    now = settings(cfg)
    changes = figure_changes(rec["settings"], now)
    if not changes:
        return []
    if not accept:
        raise ConfigError(refusal(results, changes))
    stamp = time.strftime("%Y%m%dT%H%M%S")
    everyone = any(c.kernel is None for c in changes)
    kernels = sorted(
        set(rec["settings"]["kernels"]) if everyone else {c.kernel for c in changes if c.kernel}
    )
    moved = supersede(results, kernels, stamp)
    rec["history"].append(
        {
            "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "accepted": True,
            "changes": [
                {"key": c.key, "old": c.old, "new": c.new, "kernel": c.kernel} for c in changes
            ],
            "superseded": layout.superseded(stamp).relative_to(results).as_posix()
            if moved
            else None,
            "kernels_retimed": kernels,
        }
    )
    rec["settings"] = {**now, "other": rec["settings"]["other"]}
    _write(results, rec)
    lines = [f"accepted: {c.line()}" for c in changes]
    lines.append(
        f"{moved} figure artifact(s) of {', '.join(kernels)} made under the old settings moved "
        f"to {layout.superseded(stamp)}; they are made again now"
    )
    return lines


def record(cfg: CampaignConfig, results: Path) -> list[str]:
    """``onstart``: keep the settings of the first run; record allowed changes later."""
    now = settings(cfg)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    rec = read_record(results)
    if rec is None:
        _write(results, {"first_run": stamp, "settings": now, "history": []})
        return []
    changes = other_changes(rec["settings"], now)
    new_kernels = sorted(set(now["kernels"]) - set(rec["settings"]["kernels"]))
    if not changes and not new_kernels:
        return []
    rec["history"].append(
        {
            "at": stamp,
            "accepted": True,
            "allowed": True,
            "changes": [{"key": c.key, "old": c.old, "new": c.new} for c in changes],
            "kernels_added": new_kernels,
        }
    )
    rec["settings"]["other"] = now["other"]
    for name in new_kernels:
        rec["settings"]["kernels"][name] = now["kernels"][name]
    _write(results, rec)
    return [f"recorded (does not change figures): {c.line()}" for c in changes] + [
        f"recorded: kernel {name} added" for name in new_kernels
    ]


def made_by(results: Path) -> dict[str, Any] | None:
    """The record, for status and the report (None when the folder has none)."""
    return read_record(Path(results))
