"""The few things the Snakefile needs at parse time, kept here so they are unit-testable.

The package never imports snakemake: a check that must stop the workflow raises
:class:`~hpcagents.spec.config.ConfigError` with the whole message, and the Snakefile's
``stop_on()`` (workflow/rules/common.smk) turns it into Snakemake's ``WorkflowError``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from hpcagents.spec.config import CampaignConfig, ConfigError, parse_config
from hpcagents.spec.kernelspec import load_kernel


def load_campaign(config: dict[str, Any]) -> CampaignConfig:
    """Validate Snakemake's ``config``; raise ``ConfigError`` with the key in the message."""
    try:
        cfg = parse_config(dict(config))
        for name in cfg.kernels:
            kernel = load_kernel(name, cfg.kernel_search)
            if kernel.source != f"{name}.c":
                raise ConfigError(
                    f"{kernel.directory / 'kernel.yaml'}: key 'source' must be '{name}.c' "
                    f"(the candidate file of kernel <name> is <name>.c), not '{kernel.source}'"
                )
    except (ConfigError, ValueError) as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
    return cfg


def write_effective_config(cfg: CampaignConfig, state_dir: Path | str) -> str:
    """Write the validated config for the steps; return its path.

    The file is named by a hash of its content and written once (atomically): a running
    campaign's jobs carry that path in their command lines, and no later parse of the
    Snakefile with another config (a dry run, a status query, a second campaign in the
    same checkout) can change the file they read. Remote jobs that parse the Snakefile
    again find it already there and leave it alone.
    """
    from hpcagents.core.artifacts import write_text_atomic

    text = json.dumps(cfg.raw, indent=2, sort_keys=True) + "\n"
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = Path(state_dir) / f"config-{digest}.json"
    try:
        if path.read_text() == text:
            return str(path)
    except FileNotFoundError:
        pass
    write_text_atomic(path, text)
    return str(path)


CURRENT = "current-config.json"


def mark_current_config(effective: str) -> None:
    """``onstart`` hook: point ``<state dir>/current-config.json`` at the effective config
    of the run that really starts (dry runs do not call onstart), for ``hpcagents
    status`` and the report to read."""
    from hpcagents.core.artifacts import write_text_atomic

    path = Path(effective)
    write_text_atomic(path.parent / CURRENT, json.dumps({"config": path.name}) + "\n")


def current_config(state_dir: Path) -> Path | None:
    """The effective config of the last run that started in this campaign (None: none)."""
    try:
        name = json.loads((Path(state_dir) / CURRENT).read_text())["config"]
    except (OSError, ValueError, KeyError):
        found = sorted(Path(state_dir).glob("config-*.json"), key=lambda p: p.stat().st_mtime)
        return found[-1] if found else None
    return Path(state_dir) / name


def check_servers_or_die(cfg: CampaignConfig) -> None:
    """``onstart`` hook: probe the servers and remember what they offer; stop before any
    job when a role has no usable server (``ConfigError``); warn about servers left out
    or unknowns."""
    from hpcagents.llm.probe import check_servers, print_warnings

    print_warnings(check_servers(cfg))


def guard_results(cfg: CampaignConfig, results: Path | str = "results") -> None:
    """Parse time, before any job: stop when the results here were made under other
    figure settings (see :mod:`hpcagents.spec.frozen`), unless the run accepts the changes."""
    import os

    from hpcagents.spec.frozen import ACCEPT_ENV, guard

    try:
        notes = guard(cfg, Path(results), accept=os.environ.get(ACCEPT_ENV) == "1")
    except (ConfigError, ValueError) as exc:
        raise ConfigError(f"hpcagents: {exc}") from None
    for note in notes:
        print(f"hpcagents: {note}", flush=True)


def record_results_settings(cfg: CampaignConfig, results: Path | str = "results") -> None:
    """``onstart``: keep what made this results folder (first run), record allowed changes."""
    from hpcagents.spec.frozen import record

    for note in record(cfg, Path(results)):
        print(f"hpcagents: {note}", flush=True)
