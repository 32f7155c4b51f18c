"""Campaign configuration: schema validation and typed records.

The Snakefile validates ``config`` here before building any job, so a malformed config
fails at once with a message that names the key, and nothing already done is touched.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .artifacts import REPO_DIR, ArtifactError, validate


class ConfigError(ValueError):
    """The campaign configuration is unusable; the message says which key and why."""


@dataclass(frozen=True)
class ServerConfig:
    """One OpenAI-compatible endpoint."""

    name: str
    base_url: str
    model: str
    api_key_env: str | None = None
    max_concurrency: int = 4
    timeout_s: float = 600.0
    reasoning_effort: str | None = None
    # response_format JSON schema: None = try and fall back if refused; False = never ask
    structured_output: bool | None = None
    context_tokens: int | None = None  # None: ask /v1/models

    def api_key(self) -> str:
        """The key from the named env var; local servers accept any non-empty string."""
        if self.api_key_env:
            value = os.environ.get(self.api_key_env)
            if not value:
                raise ConfigError(
                    f"llm server '{self.name}': env var {self.api_key_env} (api_key_env) is unset"
                )
            return value
        return "not-needed"


@dataclass(frozen=True)
class LLMConfig:
    servers: tuple[ServerConfig, ...]
    temperature: float
    max_tokens: int
    max_retries: int
    max_reasks: int
    cache_dir: Path
    check_servers: bool = True
    offline: bool = False


@dataclass(frozen=True)
class CampaignConfig:
    kernels: tuple[str, ...]
    iterations: int
    pgs: int
    max_repairs: int
    seed: int
    cc: str
    cflags: tuple[str, ...]
    blas: str
    repeats: int
    warmup: int
    timeout_s: float
    bench_size: int | None
    threads: int | None
    llm: LLMConfig
    finalists: int = 3
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)


def parse_config(raw: dict[str, Any], kernels_dir: Path | None = None) -> CampaignConfig:
    """Validate a config mapping against the schema and check that every kernel exists."""
    try:
        validate(raw, "config", what="config")
    except ArtifactError as exc:
        raise ConfigError(str(exc)) from None
    kernels_dir = kernels_dir or REPO_DIR / "kernels"
    for name in raw["kernels"]:
        if not (kernels_dir / name / "kernel.yaml").is_file():
            known = sorted(p.parent.name for p in kernels_dir.glob("*/kernel.yaml"))
            raise ConfigError(
                f"config: key 'kernels': unknown kernel '{name}' "
                f"(no {kernels_dir / name / 'kernel.yaml'}; known: {', '.join(known) or 'none'})"
            )
    names = [s["name"] for s in raw["llm"]["servers"]]
    if len(set(names)) != len(names):
        raise ConfigError("config: key 'llm.servers': server names must be unique")
    llm = raw["llm"]
    for s in llm["servers"]:  # [slurm helper] launched servers: see hpcagents/launch.py
        if "base_url" not in s:
            raise ConfigError(
                f"config: llm server '{s['name']}' has a launch block but no base_url yet: "
                "start the campaign with `hpcagents run` (or `hpcagents run --slurm`), which "
                "starts it as a Slurm job and fills in its address"
            )
    servers = tuple(
        ServerConfig(
            name=s["name"],
            base_url=s["base_url"].rstrip("/"),
            model=s["model"],
            api_key_env=s.get("api_key_env"),
            max_concurrency=int(s.get("max_concurrency", 4)),
            timeout_s=float(s.get("timeout_s", 600)),
            reasoning_effort=s.get("reasoning_effort"),
            structured_output=s.get("structured_output"),
            context_tokens=s.get("context_tokens"),
        )
        for s in llm["servers"]
    )
    ev, camp, build = raw["evaluation"], raw["campaign"], raw["build"]
    return CampaignConfig(
        kernels=tuple(raw["kernels"]),
        iterations=camp["iterations"],
        pgs=camp["pgs"],
        max_repairs=camp["max_repairs"],
        seed=camp["seed"],
        cc=build["cc"],
        cflags=tuple(build["cflags"]),
        blas=ev["blas"],
        repeats=ev["repeats"],
        warmup=ev["warmup"],
        timeout_s=float(ev["timeout_s"]),
        bench_size=ev.get("bench_size"),
        threads=ev.get("threads"),
        finalists=int(ev.get("finalists", 3)),
        llm=LLMConfig(
            servers=servers,
            temperature=float(llm["temperature"]),
            max_tokens=int(llm["max_tokens"]),
            max_retries=int(llm["max_retries"]),
            max_reasks=int(llm["max_reasks"]),
            cache_dir=Path(llm["cache_dir"]),
            check_servers=bool(llm.get("check_servers", True)),
            offline=bool(llm.get("offline", False)),
        ),
        raw=raw,
    )


def load_config(path: Path | str) -> CampaignConfig:
    """Load and validate a YAML config file (used by the CLI; Snakemake passes a dict)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping")
    return parse_config(raw)


def probe_server(server: ServerConfig, timeout_s: float = 5.0) -> str | None:
    """Return None when ``GET <base_url>/models`` answers, else why not (one line)."""
    req = urllib.request.Request(f"{server.base_url}/models")
    if server.api_key_env and os.environ.get(server.api_key_env):
        req.add_header("Authorization", f"Bearer {os.environ[server.api_key_env]}")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            json.loads(resp.read() or b"{}")
        return None
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code} from {server.base_url}/models"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{server.base_url} unreachable: {reason}"


def check_servers(cfg: CampaignConfig) -> None:
    """Fail fast when no configured server answers (unless offline replay is asked for).

    One reachable server is enough to start: PGs of a dead server fail over. The message
    names every server that did not answer so the user knows which line of the config to
    fix.
    """
    if cfg.llm.offline or not cfg.llm.check_servers:
        return
    problems = {s.name: probe_server(s) for s in cfg.llm.servers}
    if all(problems.values()):
        lines = "; ".join(f"server '{n}' (llm.servers): {why}" for n, why in problems.items())
        raise ConfigError(
            f"no LLM server answers: {lines}. Start the server(s) or fix llm.servers, "
            f"or set llm.offline: true to replay from the response cache."
        )
