"""The few things the Snakefile needs at parse time, kept here so they are unit-testable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hpcagents.core.layout import RESULTS
from hpcagents.spec import effective
from hpcagents.spec.config import CampaignConfig, ConfigError, check_servers, parse_config
from hpcagents.spec.kernelspec import load_kernel


def load_campaign(config: dict[str, Any]) -> CampaignConfig:
    """Validate Snakemake's ``config``; raise ``WorkflowError`` with the key in the message."""
    from snakemake.exceptions import WorkflowError

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
        raise WorkflowError(f"invalid configuration: {exc}") from None
    return cfg


# The effective record (validated config + frozen kernel specs) lives in .effective;
# the Snakefile imports these names from here.
write_effective_config = effective.write_effective_config
mark_current_config = effective.mark_current_config
current_config = effective.current_config


def check_servers_or_die(cfg: CampaignConfig) -> None:
    """``onstart`` hook: probe the servers and remember what they offer; stop before any
    job when a role has no usable server; warn about servers left out or unknowns."""
    from snakemake.exceptions import WorkflowError

    from hpcagents.llm.probe import print_warnings

    try:
        print_warnings(check_servers(cfg))
    except ConfigError as exc:
        raise WorkflowError(str(exc)) from None


def guard_results(cfg: CampaignConfig, results: Path | str = RESULTS) -> None:
    """Parse time, before any job: stop when the results here were made under other
    figure settings (see :mod:`hpcagents.spec.frozen`), unless the run accepts the changes."""
    import os

    from snakemake.exceptions import WorkflowError

    from hpcagents.spec.frozen import ACCEPT_ENV, guard

    try:
        notes = guard(cfg, Path(results), accept=os.environ.get(ACCEPT_ENV) == "1")
    except (ConfigError, ValueError) as exc:
        raise WorkflowError(f"hpcagents: {exc}") from None
    for note in notes:
        print(f"hpcagents: {note}", flush=True)


def record_results_settings(cfg: CampaignConfig, results: Path | str = RESULTS) -> None:
    """``onstart``: keep what made this results folder (first run), record allowed changes."""
    from hpcagents.spec.frozen import record

    for note in record(cfg, Path(results)):
        print(f"hpcagents: {note}", flush=True)
