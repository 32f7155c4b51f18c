"""Validate once, freeze once: the effective config of a run and its kernel specs.

Why: every job used to load the config file again (YAML, the JSON Schema, folder and
server checks) and every kernel.yaml it touched (YAML, schema, blanks), so a campaign of
hundreds of jobs paid that hundreds of times, and a kernel.yaml edited in the middle of
a campaign silently changed the jobs after the edit.

At parse time the Snakefile validates the config and every kernel spec once and writes
the **effective record** ``<results>/.hpcagents/config-<hash>.json``: the validated
config (its keys at the top level, as before) plus ``frozen``, a snapshot of every
kernel it uses (kernel.yaml as data, its folder, the sha256 of kernel.yaml and of the
files it names). The file is named by a hash of its content and never rewritten, so no
later parse (a dry run, a second campaign, an edited kernel.yaml) changes what a running
campaign's jobs read. Jobs load it with :func:`load_effective`: no schema pass, kernel
specs from the snapshot (:meth:`CampaignConfig.kernel`).

An edited kernel.yaml is caught at the next start: the results folder's record of what
made it (:mod:`.frozen`, ``made-by.json``) holds the specs it was made with; the start stops,
naming the changed key, until the user starts a new results folder or accepts it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from hpcagents.core.artifacts import write_text_atomic
from hpcagents.core.layout import CampaignLayout
from hpcagents.spec.config import CampaignConfig, ConfigError, build_config, load_config
from hpcagents.spec.kernelspec import kernel_snapshot

#: The key of the effective record that holds the frozen kernel specs.
FROZEN = "frozen"


def effective_record(cfg: CampaignConfig) -> dict[str, Any]:
    """The validated config and a snapshot of each of its kernels (validated here)."""
    kernels = {name: kernel_snapshot(name, cfg.kernel_search) for name in cfg.kernels}
    return {**cfg.raw, FROZEN: {"kernels": kernels}}


def write_effective_config(cfg: CampaignConfig, layout: CampaignLayout | Path | str) -> str:
    """Write the run's effective record (see the module's doc); return its path.

    ``layout`` is the campaign's layout (or, for older callers, its state folder). The
    file is named by a hash of its content and written once (atomically): a running
    campaign's jobs carry that path in their command lines, and no later parse of the
    Snakefile with another config or kernel spec can change the file they read. Remote
    jobs that parse the Snakefile again find it already there and leave it alone.
    """
    text = json.dumps(effective_record(cfg), indent=2, sort_keys=True) + "\n"
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    if isinstance(layout, CampaignLayout):
        path = layout.effective_config(digest)
    else:
        path = Path(layout) / f"config-{digest}.json"
    try:
        if path.read_text() == text:
            return str(path)
    except FileNotFoundError:
        pass
    write_text_atomic(path, text)
    return str(path)


def is_effective(raw: dict[str, Any]) -> bool:
    return isinstance(raw.get(FROZEN), dict)


def load_effective(raw: dict[str, Any]) -> CampaignConfig:
    """The config of a run's effective record, as validated when the run started."""
    body = {k: v for k, v in raw.items() if k != FROZEN}
    return build_config(body, dict(raw[FROZEN]["kernels"]))


def load_step_config(path: Path | str) -> CampaignConfig:
    """The config a step's ``--config`` names: a run's effective record (read as frozen,
    no validation again), or a config file of the user's (validated)."""
    path = Path(path)
    if path.suffix == ".json":
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except ValueError as exc:
            raise ConfigError(f"config file {path}: not valid JSON: {exc}") from None
        if isinstance(raw, dict) and is_effective(raw):
            return load_effective(raw)
    return load_config(path)


def mark_current_config(effective: str) -> None:
    """``onstart`` hook: point ``<state dir>/current-config.json`` at the effective config
    of the run that really starts (dry runs do not call onstart), for ``hpcagents
    status`` and the report to read."""
    path = Path(effective)
    current = path.parent / CampaignLayout().current_config().name  # beside it
    write_text_atomic(current, json.dumps({"config": path.name}) + "\n")


def current_config(layout: CampaignLayout) -> Path | None:
    """The effective config of the last run that started in this campaign (None: none)."""
    try:
        name = json.loads(layout.current_config().read_text())["config"]
    except (OSError, ValueError, KeyError):
        found = layout.effective_configs()
        return found[-1] if found else None
    return layout.state / name
