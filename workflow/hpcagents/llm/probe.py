"""What each LLM server can do, learned once at the start of a campaign and remembered.

Why: the servers our users run differ in ways that matter before the first request.
vLLM answers 404 for a model name it does not serve; llama.cpp serves one model whatever
the name; llama.cpp's ``/v1/models`` may not say the context length (``/props`` does),
Ollama's lives in ``/api/show``; some servers refuse ``response_format`` JSON schemas
(llama-cpp-python answers HTTP 500), others accept only ``json_object``. Finding this out
at the first plan costs retries, wrong advice and, with a second server, minutes per
call. So :func:`check_servers` probes every server when Snakemake starts, stops with a
message that names the server and what to change when a role would be left without a
usable server, and writes what it learned to ``results/.hpcagents/servers/<name>.json``;
every job's pool reads it, and the pool adds what it learns later (a refused
``response_format``, a context length from an overflow error) to the same file.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hpcagents.core.artifacts import write_json
from hpcagents.llm.interface import ServerCaps, sentence
from hpcagents.spec.config import ROLES, CampaignConfig, ConfigError, ServerConfig

#: Structured-output modes, strongest first; the pool steps down this list on refusal.
STRUCTURED_MODES = ("json_schema", "json_object", "none")
PROBE_TIMEOUT_S = 5.0


class ServerState:
    """The per-server JSON files under the campaign's state directory.

    Updates are read-modify-write under a file lock, because every Snakemake job is its
    own process and two may learn something about the same server at once.
    """

    def __init__(self, state_dir: Path | None) -> None:
        self.dir = Path(state_dir) if state_dir else None
        self._memory: dict[str, dict[str, Any]] = {}

    def path(self, name: str) -> Path | None:
        return self.dir / f"{name}.json" if self.dir else None

    def load(self, server: ServerConfig) -> dict[str, Any]:
        """What is known about ``server`` (empty when nothing, or when its config changed)."""
        path = self.path(server.name)
        data: dict[str, Any] = dict(self._memory.get(server.name, {}))
        if path is not None and path.is_file():
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                data = {}
        if data.get("base_url") != server.base_url or data.get("model") != server.model:
            return {}
        return data

    @contextmanager
    def _locked(self) -> Iterator[None]:
        if self.dir is None:
            yield
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def save(self, caps: ServerCaps) -> None:
        with self._locked():
            self._write(caps.name, asdict(caps))

    def update(self, server: ServerConfig, **fields: Any) -> None:
        """Merge ``fields`` into what is known about ``server`` (created if need be)."""
        with self._locked():
            blank = ServerCaps(server.name, server.base_url, server.model)
            data = self.load(server) or asdict(blank)
            data.update(fields)
            self._write(server.name, data)

    def _write(self, name: str, data: dict[str, Any]) -> None:
        self._memory[name] = data
        path = self.path(name)
        if path is not None:
            write_json(path, data)


def _root(base_url: str) -> str:
    """The server's root: ``http://h:p/v1`` -> ``http://h:p`` (llama.cpp, Ollama routes)."""
    return base_url[: -len("/v1")] if base_url.endswith("/v1") else base_url


def _http(
    url: str,
    server: ServerConfig,
    payload: dict[str, Any] | None = None,
    timeout_s: float = PROBE_TIMEOUT_S,
) -> tuple[int, Any]:
    """(status, parsed JSON or text) of a GET (or a POST when ``payload`` is given).

    Connection problems raise ``OSError``; HTTP errors are returned as their status.
    """
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(url, data=data)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    key = os.environ.get(server.api_key_env) if server.api_key_env else None
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read() or b""
    try:
        return status, json.loads(body or b"null")
    except ValueError:
        return status, body.decode(errors="replace")


def error_text(body: Any) -> str:
    """The message of an OpenAI-style error body (``{"error": {"message": ...}}``)."""
    if isinstance(body, dict):
        err = body.get("error", body.get("detail", body))
        if isinstance(err, dict):
            return str(err.get("message") or err)
        return str(err)
    return str(body)


def models_listed(body: Any) -> tuple[list[str], list[dict[str, Any]]]:
    """Model ids (and aliases) a ``/v1/models`` answer offers, and its raw entries."""
    data = body.get("data") if isinstance(body, dict) else None
    entries = [m for m in data or [] if isinstance(m, dict)]
    ids: list[str] = []
    for m in entries:
        for name in [m.get("id"), *(m.get("aliases") or [])]:
            if isinstance(name, str) and name and name not in ids:
                ids.append(name)
    return ids, entries


def context_from_models(entries: list[dict[str, Any]], model: str) -> tuple[int | None, str]:
    """Context length a ``/v1/models`` entry states: vLLM ``max_model_len``, llama.cpp
    ``meta.n_ctx`` (what the server runs with) or, last, ``meta.n_ctx_train``."""
    chosen = [m for m in entries if m.get("id") == model or model in (m.get("aliases") or [])]
    if not chosen and len(entries) == 1:
        chosen = entries
    for m in chosen:
        if m.get("max_model_len"):
            return int(m["max_model_len"]), "/v1/models max_model_len"
        meta = m.get("meta") or {}
        if meta.get("n_ctx"):
            return int(meta["n_ctx"]), "/v1/models meta.n_ctx"
        if meta.get("n_ctx_train"):
            return int(meta["n_ctx_train"]), "/v1/models meta.n_ctx_train (training context)"
    return None, "unknown"


def _kind(entries: list[dict[str, Any]]) -> str:
    owners = {str(m.get("owned_by", "")) for m in entries}
    if any("scripted" in o for o in owners):
        return "scripted-stand-in"
    if "vllm" in owners or any("max_model_len" in m for m in entries):
        return "vllm"
    if "llamacpp" in owners or any("meta" in m for m in entries):
        return "llama.cpp"
    if owners & {"library", "ollama"}:
        return "ollama"
    return "openai-compatible"


def _ollama_context(server: ServerConfig) -> tuple[int | None, str]:
    """Ollama: ``num_ctx`` of the model if set, else its default (4096, not the model's)."""
    try:
        status, body = _http(f"{_root(server.base_url)}/api/show", server, {"model": server.model})
    except OSError:
        return None, "unknown"
    if status != 200 or not isinstance(body, dict):
        return None, "unknown"
    for line in str(body.get("parameters") or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "num_ctx" and parts[1].isdigit():
            return int(parts[1]), "/api/show num_ctx"
    return 4096, "Ollama's default num_ctx (the model's own is larger; set num_ctx to use it)"


def _llamacpp_context(server: ServerConfig) -> tuple[int | None, str]:
    try:
        status, body = _http(f"{_root(server.base_url)}/props", server)
    except OSError:
        return None, "unknown"
    if status != 200 or not isinstance(body, dict):
        return None, "unknown"
    settings = body.get("default_generation_settings") or {}
    n_ctx = settings.get("n_ctx") or body.get("n_ctx")
    return (int(n_ctx), "/props n_ctx") if n_ctx else (None, "unknown")


#: Words in an error that mean "this server will not take response_format".
FORMAT_WORDS = ("response_format", "json_schema", "json_object", "'text' or")


def names_response_format(message: str) -> bool:
    low = message.lower()
    return any(w in low for w in FORMAT_WORDS)


def _try_structured(server: ServerConfig, mode: str) -> tuple[str, Any]:
    """One 1-token chat request in ``mode``: ``ok``, ``refused``, ``not_found`` or ``error``."""
    payload: dict[str, Any] = {
        "model": server.model,
        "messages": [{"role": "user", "content": "Answer with the JSON object {}."}],
        "max_tokens": 1,
        "temperature": 0,
    }
    if mode == "json_schema":
        payload["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "probe", "schema": {"type": "object"}},
        }
    elif mode == "json_object":
        payload["response_format"] = {"type": "json_object"}
    try:
        status, body = _http(
            f"{server.base_url}/chat/completions",
            server,
            payload,
            timeout_s=max(PROBE_TIMEOUT_S, min(server.timeout_s, 60.0)),
        )
    except OSError as exc:
        return "down", str(exc)
    if status == 200:
        return "ok", body
    text = error_text(body)
    if status == 404 and "model" in text.lower():
        return "not_found", text
    if status >= 400 and mode != "none" and names_response_format(text):
        return "refused", text
    return "error", f"HTTP {status}: {text[:200]}"


def _reasoning_field(body: Any) -> str:
    try:
        message = body["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        return "unknown"
    separate = any(k in message for k in ("reasoning_content", "reasoning"))
    return "separate" if separate else "unknown"


def probe(server: ServerConfig, previous: dict[str, Any] | None = None) -> ServerCaps:
    """Probe one server. ``previous`` (what an earlier start learned) spares the
    structured-output request when the server and model are unchanged."""
    if server.kind == "files":  # [feedback] a queue folder: nothing to ask at start
        from hpcagents.llm.files import probe as probe_files

        return probe_files(server)
    caps = ServerCaps(server.name, server.base_url, server.model, probed_at=round(time.time(), 3))
    where = f"server '{server.name}' (llm.servers)"
    if server.api_key_env and not os.environ.get(server.api_key_env):
        caps.usable = False
        caps.reason = (
            f"{where}: the environment variable {server.api_key_env} named by api_key_env is "
            f"unset or empty; export it before starting Snakemake, or set api_key_env: null "
            f"if this server needs no key"
        )
        return caps
    url = f"{server.base_url}/models"
    try:
        status, body = _http(url, server)
    except OSError as exc:
        caps.reason = f"{where}: {server.base_url} unreachable: {getattr(exc, 'reason', exc)}"
        return caps
    caps.reachable = True
    if status in (401, 403):
        caps.usable = False
        caps.reason = (
            f"{where}: HTTP {status} from {url}: the server refuses the API key"
            + (f" in {server.api_key_env}" if server.api_key_env else " (api_key_env is null)")
            + "; set api_key_env to the variable holding a valid key"
        )
        return caps
    if status != 200:
        caps.usable = False
        hint = ""
        if status == 404 and not server.base_url.endswith("/v1"):
            try:
                ok = _http(f"{server.base_url}/v1/models", server)[0] == 200
            except OSError:
                ok = False
            hint = (
                f"; the server answers at {server.base_url}/v1: set base_url to that"
                if ok
                else "; OpenAI-compatible servers answer at http://host:port/v1: "
                "does base_url end in /v1"
            )
        caps.reason = f"{where}: HTTP {status} from {url}{hint}"
        return caps
    caps.models, entries = models_listed(body)
    caps.kind = _kind(entries)
    caps.model_present = server.model in caps.models
    if not caps.model_present:
        offered = ", ".join(caps.models) or "nothing"
        if caps.kind == "llama.cpp" and len(entries) == 1:
            caps.notes.append(
                f"model '{server.model}' is not the name llama.cpp lists ({offered}); "
                f"llama.cpp answers with its one model whatever the name"
            )
        else:
            caps.usable = False
            caps.reason = (
                f"{where}: model '{server.model}' is not served at {server.base_url}; it "
                f"offers: {offered}. Set model to one of them"
            )
            return caps
    # Context length: the config wins, then what the server itself says.
    if server.context_tokens:
        caps.context_tokens, caps.context_source = server.context_tokens, "config"
    else:
        ctx, source = None, "unknown"
        if caps.kind == "llama.cpp":
            ctx, source = _llamacpp_context(server)
        if ctx is None:
            ctx, source = context_from_models(entries, server.model)
        if ctx is None and caps.kind in ("ollama", "openai-compatible"):
            ctx, source = _ollama_context(server)
        caps.context_tokens, caps.context_source = ctx, source
        if ctx is None:
            caps.notes.append(
                "the server does not say its context length; set context_tokens for this "
                "server so prompts are fitted (an overflow is still recognised from its error)"
            )
        elif "training context" in source or "default num_ctx" in source:
            caps.notes.append(f"context length {ctx} from {source}; set context_tokens if wrong")
    # Structured output: what an earlier start learned, the config, or one tiny request.
    prev = previous or {}
    if server.structured_output is False:
        caps.structured_output = "none"
        caps.notes.append("structured output off (structured_output: false)")
    elif prev.get("structured_output") in STRUCTURED_MODES:
        caps.structured_output = prev["structured_output"]
        caps.reasoning = prev.get("reasoning", "unknown")
    else:
        for mode in STRUCTURED_MODES:
            outcome, detail = _try_structured(server, mode)
            if outcome == "ok":
                caps.structured_output = mode
                caps.reasoning = _reasoning_field(detail)
                break
            if outcome == "not_found":
                caps.usable = False
                caps.reason = (
                    f"{where}: the server does not know model '{server.model}' "
                    f"({sentence(detail[:200])}); it lists: "
                    f"{', '.join(caps.models) or 'nothing'}. Set model to one of them"
                )
                return caps
            if outcome in ("error", "down"):
                if outcome == "down":  # listed its models, then left a chat unanswered
                    caps.down_since = round(time.time(), 3)
                caps.notes.append(
                    f"structured-output probe inconclusive ({sentence(str(detail)[:160])}); "
                    f"the first PM call finds out"
                )
                break
    return caps


def check_servers(cfg: CampaignConfig) -> list[str]:
    """Probe every server, remember what was learned, and fail fast when a role is left
    without a usable server. Returns the warnings to show (servers left out, unknowns).

    One reachable server per role is enough to start: the PGs (or the PM) of a dead
    server fail over. A server that cannot work (no API key, unknown model, wrong URL)
    is left out with a warning when others remain for its roles, else it stops the run.
    """
    if cfg.llm.offline or not cfg.llm.check_servers:
        return []
    state = ServerState(cfg.llm.state_dir)
    servers = cfg.llm.servers
    with ThreadPoolExecutor(max_workers=min(8, len(servers))) as ex:
        caps = list(ex.map(lambda s: probe(s, state.load(s)), servers))
    for c in caps:
        state.save(c)
    by_name = {c.name: c for c in caps}
    warnings: list[str] = []
    for role in ROLES:
        mine = [by_name[s.name] for s in cfg.llm.servers_for(role)]
        usable = [c for c in mine if c.usable]
        if not usable:
            lines = "; ".join(sentence(c.reason) for c in mine)
            raise ConfigError(f"no usable LLM server for the {role.upper()}: {lines}")
        if not any(c.reachable for c in usable):
            lines = "; ".join(sentence(c.reason) for c in mine)
            raise ConfigError(
                f"no LLM server answers for the {role.upper()}: {lines}. Start the server(s) or "
                f"fix llm.servers, or set llm.offline: true to replay from the response cache"
            )
    for c in caps:
        if not c.usable:
            warnings.append(f"left out of the campaign: {sentence(c.reason)}")
        elif not c.reachable:
            warnings.append(
                f"server '{c.name}' does not answer now ({sentence(c.reason)}); its requests "
                f"fail over until it does"
            )
        warnings.extend(f"server '{c.name}': {sentence(n)}" for n in c.notes)
    return warnings


def print_warnings(warnings: list[str]) -> None:
    for w in warnings:
        print(f"hpcagents: warning: {w}", file=sys.stderr)
