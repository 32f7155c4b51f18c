"""The few things the Snakefile needs at parse time, kept here so they are unit-testable.

The package never imports snakemake: a check that must stop the workflow raises
:class:`~hpcagents.spec.config.ConfigError` with the whole message, and the Snakefile's
``stop_on()`` (workflow/rules/common.smk) turns it into Snakemake's ``WorkflowError``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hpcagents.core.layout import RESULTS
from hpcagents.spec import effective
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


# The effective record (validated config + frozen kernel specs) lives in spec.effective;
# the Snakefile imports these names from here.
write_effective_config = effective.write_effective_config
mark_current_config = effective.mark_current_config
current_config = effective.current_config


def check_servers_or_die(cfg: CampaignConfig) -> None:
    """``onstart`` hook: probe the servers and remember what they offer; stop before any
    job when a role has no usable server (``ConfigError``); warn about servers left out
    or unknowns."""
    from hpcagents.llm.probe import check_servers, print_warnings

    print_warnings(check_servers(cfg))


def guard_results(cfg: CampaignConfig, results: Path | str = RESULTS) -> None:
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


def record_results_settings(cfg: CampaignConfig, results: Path | str = RESULTS) -> None:
    """``onstart``: keep what made this results folder (first run), record allowed changes."""
    from hpcagents.spec.frozen import record

    for note in record(cfg, Path(results)):
        print(f"hpcagents: {note}", flush=True)
