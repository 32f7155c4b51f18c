"""Campaign configuration: schema validation and typed records.

The Snakefile validates ``config`` here before building any job, so a malformed config
fails at once with a message that names the key, and nothing already done is touched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hpcagents.core.artifacts import ArtifactError, validate
from hpcagents.core.layout import CampaignLayout
from hpcagents.spec.kernelspec import (
    KernelSpec,
    kernel_search_path,
    known_kernels,
    load_kernel,
    spec_from_snapshot,
)


class ConfigError(ValueError):
    """The campaign configuration is unusable; the message says which key and why."""


#: What the start-up probe learned per server, relative to the campaign's directory.
STATE_DIR = str(CampaignLayout().servers())

#: Agent roles a server may serve: the PM (plans) and the PGs (write code).
ROLES = ("pm", "pg")


@dataclass(frozen=True)
class ServerConfig:
    """One OpenAI-compatible endpoint."""

    name: str
    base_url: str
    model: str
    api_key_env: str | None = None
    max_concurrency: int = 4
    timeout_s: float = 300.0
    reasoning_effort: str | None = None
    # response_format JSON schema: None = try and fall back if refused; False = never ask
    structured_output: bool | None = None
    context_tokens: int | None = None  # None: ask the server (probe)
    roles: tuple[str, ...] = ROLES  # which agents this server may answer for
    # [feedback] how requests reach the model: "openai" (HTTP, OpenAI-compatible) or
    # "files" (a queue folder a person or an air-gapped model answers: hpcagents.llm.files)
    kind: str = "openai"
    queue_dir: Path | None = None  # kind files: absolute path of the queue folder
    poll_s: float = 2.0  # kind files: how often the answer file is looked for

    def api_key(self) -> str:
        """The key from the named env var; local servers accept any non-empty string."""
        if self.api_key_env:
            value = os.environ.get(self.api_key_env)
            if not value:
                raise ConfigError(
                    f"llm server '{self.name}': the environment variable {self.api_key_env} "
                    f"(llm.servers: api_key_env) is unset or empty; export it before starting "
                    f"Snakemake, or set api_key_env: null if the server needs no key"
                )
            return value
        return "not-needed"


@dataclass(frozen=True)
class RoleConfig:
    """Sampling settings of one agent role; None falls back to ``llm.*`` (or the server)."""

    temperature: float | None = None
    max_tokens: int | None = None
    reasoning_effort: str | None = None


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
    # A request that timed out moves on to the role's next server at once; on the role's
    # last server it is retried this many times (other faults: max_retries).
    timeout_retries: int = 1
    roles: dict[str, RoleConfig] = field(default_factory=dict)
    # Where the start-up probe leaves what it learned per server (None: keep in memory).
    state_dir: Path | None = None

    def role(self, name: str) -> RoleConfig:
        return self.roles.get(name, RoleConfig())

    def servers_for(self, role: str) -> tuple[ServerConfig, ...]:
        return tuple(s for s in self.servers if role in s.roles)


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
    # [verdict] the final round's bound on rounds while uncertain; the search (archive/greedy)
    final_round_max_rounds: int | None = None
    # [scale] the final round's scale check factor (None: no check); see judge.scale
    scale_check: float | None = 2.0
    search: str = "archive"
    # The user's own kernel folders, searched before the built-in kernels/ (absolute).
    kernels_dir: Path | None = None
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)
    # The kernel specs frozen at the start of the run (see hpcagents.spec.effective): a job
    # reads these, not the kernel folders as they are now. None: read the folders.
    frozen_kernels: dict[str, Any] | None = field(repr=False, compare=False, default=None)

    @property
    def kernel_search(self) -> tuple[Path, ...]:
        """Where this campaign's kernels are looked for, first match wins."""
        return kernel_search_path(self.kernels_dir)

    def kernel(self, name: str) -> KernelSpec:
        """Kernel ``name`` as this campaign uses it: the spec frozen at the start of the run
        (already validated, no schema pass), else loaded and validated from its folder."""
        if self.frozen_kernels is not None and name in self.frozen_kernels:
            return spec_from_snapshot(name, self.frozen_kernels[name])
        return load_kernel(name, self.kernel_search)


def _check_server_kinds(raw: dict[str, Any]) -> None:
    """Say plainly what a mixed-up server entry needs (the schema's if/then would only
    say "should not be valid under ...")."""
    servers = (raw.get("llm") or {}).get("servers") if isinstance(raw, dict) else None
    for i, s in enumerate(servers if isinstance(servers, list) else []):
        if not isinstance(s, dict):
            continue
        where = f"config: key 'llm.servers.{i}' (server '{s.get('name', '?')}')"
        if s.get("kind") == "files":
            extra = [k for k in ("base_url", "launch") if k in s]
            if extra:
                raise ConfigError(
                    f"{where}: a kind: files server reads answers from its queue_dir and has "
                    f"no {' or '.join(extra)}; drop {', '.join(extra)} (or drop kind: files)"
                )
        elif "queue_dir" in s:
            raise ConfigError(
                f"{where}: queue_dir is only for a file-queue server; add kind: files "
                "(and drop base_url), or drop queue_dir"
            )


def _files_url(server: dict[str, Any]) -> str:
    """A file-queue server's address: ``files://`` + its queue folder, made absolute
    against the campaign's directory (every step, wherever it runs, uses the same one)."""
    return "files://" + str(Path(server["queue_dir"]).expanduser().resolve())


def parse_config(raw: dict[str, Any]) -> CampaignConfig:
    """Validate a config mapping against the schema and check that every kernel exists.

    A relative ``kernels_dir`` is resolved against the working directory (the campaign's)
    and stored absolute, so every step, wherever it runs, reads the same folders."""
    _check_server_kinds(raw)
    try:
        validate(raw, "config", what="config")
    except ArtifactError as exc:
        raise ConfigError(str(exc)) from None
    kernels_dir = None
    if raw.get("kernels_dir"):
        kernels_dir = Path(raw["kernels_dir"]).expanduser().resolve()
        if not kernels_dir.is_dir():
            raise ConfigError(
                f"config: key 'kernels_dir': {raw['kernels_dir']} is not a directory "
                f"(resolved from {Path.cwd()}: {kernels_dir}); give the folder that holds "
                "your kernel folders (<name>/kernel.yaml)"
            )
        raw = {**raw, "kernels_dir": str(kernels_dir)}
    search = kernel_search_path(kernels_dir)
    for name in raw["kernels"]:
        if not any((d / name / "kernel.yaml").is_file() for d in search):
            known = known_kernels(search)
            raise ConfigError(
                f"config: key 'kernels': unknown kernel '{name}' (no {name}/kernel.yaml in "
                f"{' or '.join(str(d) for d in search)}; known: {', '.join(known) or 'none'})"
            )
    names = [s["name"] for s in raw["llm"]["servers"]]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(
            f"config: key 'llm.servers': the server name {', '.join(repr(d) for d in dupes)} "
            f"is used {max(names.count(d) for d in dupes)} times; give each server a name of "
            "its own (names key the response cache, the probe's state and the accounting)"
        )
    for s in raw["llm"]["servers"]:
        if "base_url" in s and s.get("kind") in (None, "openai"):
            problem = base_url_problem(s["base_url"])
            if problem:
                raise ConfigError(f"config: llm server '{s['name']}': base_url {problem}")
    check_scripted_kernels(raw, search)
    llm = raw["llm"]
    for role in ROLES:
        if not any(role in s.get("roles", ROLES) for s in llm["servers"]):
            raise ConfigError(
                f"config: key 'llm.servers': no server serves the role '{role}'; "
                f"add '{role}' to the roles of at least one server (or drop 'roles' for both)"
            )
    for s in llm["servers"]:  # [slurm helper] launched servers: see hpcagents/cluster/launch.py
        if s.get("kind", "openai") == "files":  # [feedback] no URL: a queue folder
            continue
        if "base_url" not in s:
            raise ConfigError(
                f"config: llm server '{s['name']}' has a launch block but no base_url yet: "
                "start the campaign with `hpcagents run` (or `hpcagents run --slurm`), which "
                "starts it as a Slurm job and fills in its address"
            )
    return build_config(raw)


def build_config(
    raw: dict[str, Any], frozen_kernels: dict[str, Any] | None = None
) -> CampaignConfig:
    """The typed config of a mapping that is already valid (:func:`parse_config` checked
    it, or it is a run's effective config, checked when the run started): no schema pass,
    no folder checks."""
    llm = raw["llm"]
    kernels_dir = Path(raw["kernels_dir"]) if raw.get("kernels_dir") else None
    servers = tuple(
        ServerConfig(
            name=s["name"],
            base_url=_files_url(s) if s.get("kind") == "files" else s["base_url"].rstrip("/"),
            model=s["model"],
            api_key_env=s.get("api_key_env"),
            max_concurrency=int(s.get("max_concurrency", 4)),
            timeout_s=float(s.get("timeout_s", 300)),
            reasoning_effort=s.get("reasoning_effort"),
            structured_output=s.get("structured_output"),
            context_tokens=s.get("context_tokens"),
            roles=tuple(r for r in ROLES if r in s.get("roles", ROLES)),
            kind=s.get("kind", "openai"),
            queue_dir=Path(_files_url(s)[len("files://") :]) if s.get("kind") == "files" else None,
            poll_s=float(s.get("poll_s", 2.0)),
        )
        for s in llm["servers"]
    )
    roles = {
        name: RoleConfig(
            temperature=(r or {}).get("temperature"),
            max_tokens=(r or {}).get("max_tokens"),
            reasoning_effort=(r or {}).get("reasoning_effort"),
        )
        for name, r in (llm.get("roles") or {}).items()
    }
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
        final_round_max_rounds=ev.get("final_round_max_rounds"),
        scale_check=None if ev.get("scale_check", 2) is None else float(ev.get("scale_check", 2)),
        search=camp.get("search", "archive"),
        kernels_dir=kernels_dir,
        llm=LLMConfig(
            servers=servers,
            temperature=float(llm["temperature"]),
            max_tokens=int(llm["max_tokens"]),
            max_retries=int(llm["max_retries"]),
            max_reasks=int(llm["max_reasks"]),
            cache_dir=Path(llm["cache_dir"]),
            check_servers=bool(llm.get("check_servers", True)),
            offline=bool(llm.get("offline", False)),
            timeout_retries=int(llm.get("timeout_retries", 1)),
            roles=roles,
            state_dir=Path(STATE_DIR),
        ),
        raw=raw,
        frozen_kernels=frozen_kernels,
    )


#: The OpenAI-compatible API's path: vLLM, SGLang, llama.cpp's llama-server and Ollama all
#: serve it under /v1; a lenient server also answers without it, a strict one 404s.
OPENAI_PATH = "/v1"


def base_url_problem(url: str) -> str | None:
    """What is wrong with an OpenAI-compatible ``base_url`` (None: nothing).

    Checked for every server kind at start, not left to the first request: a base_url
    without /v1 passes on a lenient server and then every request 404s on a strict one."""
    from urllib.parse import urlsplit

    path = urlsplit(url).path.rstrip("/")
    for endpoint in ("/chat/completions", "/completions", "/models"):
        if path.endswith(endpoint):
            base = url.rstrip("/")[: -len(endpoint)]
            return (
                f"{url!r} names the endpoint {endpoint}, not the API's base: write {base!r} "
                "(the client adds the endpoint)"
            )
    if not path.endswith(OPENAI_PATH):
        return (
            f"{url!r} does not end in {OPENAI_PATH}: OpenAI-compatible servers (vLLM, "
            f"SGLang, llama.cpp, Ollama) serve the API under {OPENAI_PATH}; write "
            f"{url.rstrip('/') + OPENAI_PATH!r}"
        )
    return None


#: Model ids of the scripted stand-in start with this.
SCRIPTED_PREFIX = "scripted"


def check_scripted_kernels(raw: dict[str, Any], search: tuple[Path, ...]) -> None:
    """Refuse, before any job, a campaign on the scripted model (the stand-in) for a
    kernel it has no hand-written variants for: every answer would be a failure."""
    scripted = [
        s["name"]
        for s in raw["llm"]["servers"]
        if str(s.get("model", "")).startswith(SCRIPTED_PREFIX)
    ]
    if not scripted:
        return
    served = {p.parent.parent.name for d in search for p in Path(d).glob("*/scripted/script.yaml")}
    missing = [
        k
        for k in raw["kernels"]
        if not any(
            (Path(d) / k / "scripted" / "script.yaml").is_file()
            for d in search
            if (Path(d) / k / "kernel.yaml").is_file()
        )
    ]
    if missing:
        raise ConfigError(
            f"config: kernel(s) {', '.join(missing)}: the scripted model (server "
            f"{', '.join(repr(n) for n in scripted)}, a stand-in that answers from "
            "hand-written variants) has no variants for them (no <kernel>/scripted/"
            "script.yaml), so every attempt would fail. Point llm.servers at a real model "
            "(vLLM, llama.cpp, Ollama, SGLang), check the kernel alone with `hpcagents "
            f"evaluate --kernel {missing[0]} --source <file>`, or write a scripted/ set "
            f"(kernels/README.md). Kernels it serves: {', '.join(sorted(served)) or 'none'}"
        )


def yaml_error_message(path: Path | str, exc: yaml.YAMLError) -> str:
    """``file:line:column: problem`` for a YAML syntax error (what an editor jumps to)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    detail = f"{problem} ({context})" if context else problem
    return f"config file {where}: invalid YAML: {detail}"


def load_config(path: Path | str) -> CampaignConfig:
    """Load and validate a YAML config file (used by the CLI; Snakemake passes a dict)."""
    return parse_config(read_config_yaml(Path(path)))


def read_config_yaml(path: Path) -> dict[str, Any]:
    """A config file's YAML as a mapping; a missing file, a YAML error (with file and line)
    or a top level that is not a mapping is a ConfigError."""
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_error_message(path, exc)) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping")
    return raw
