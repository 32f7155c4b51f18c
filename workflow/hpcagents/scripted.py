"""The scripted model: an OpenAI-compatible HTTP server that is a STAND-IN for an LLM.

It answers PM and PG prompts from hand-written kernel variants listed in
``kernels/<name>/scripted/script.yaml`` (some broken on purpose, so repair is exercised).
It exercises and measures the pipeline — HTTP, caching, extraction, compile, validate,
repair, time, select — and never measures a model: every answer says so in its model id
and ``/v1/models`` lists it as ``owned_by: hpcagents-scripted-stand-in``.

It reads the header lines that open the product's prompts, which tell a real model the
same things (``Kernel:``, ``Iteration:``; a PM prompt has ``Strategies wanted:``, a PG
prompt ``PG:``, ``Attempt:``, ``Strategy:``): no marker of its own is sent to a real
model. Every request is appended to a JSON-lines log so tests can count calls and spot a
repeated prompt.

**Stochastic mode** (``--stochastic``): the scripted PM no longer walks its list in order;
it shuffles the whole pool of strategies with a generator seeded by the request's
``seed`` and proposes the first N, putting last the strategies that its prompt's history
("What has been tried so far") already names, as a PM that reads its history would.
Each PG then answers its strategy's chain of variants as usual (broken first answers
included, so repair is still exercised). Which variants a campaign explores therefore
depends on N and on the campaign seed, as with a sampled model: the 1/2/4/8-PG study
(``hpcagents study``) uses it so more PGs can find more. For one prompt and seed the
draws are nested (N = 2 proposes N = 1's strategy and one more), which pairs the
study's runs; the same request always gets the same plan, so the response cache and
exact replay work as in the default mode.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from hpcagents.core.artifacts import REPO_DIR, write_text_atomic

OWNER = "hpcagents-scripted-stand-in"
#: Fault modes, each standing for something real servers do.
FAULTS = (
    "http500",  # server error: retried with backoff
    "http429",  # rate limited / overloaded: retried with backoff
    "hang",  # accepts the request and never answers: the client's timeout, then a retry
    "die",  # drops the connection mid-request: a connection error, then a retry
    "slow_stream",  # streams in small, slow chunks
    "truncated",  # the answer is cut by the token limit (finish_reason "length")
    "garbage",  # text that is neither code nor JSON
    "invalid_json",  # a PM plan whose JSON does not parse
)
DEFAULT_MODEL = "scripted-stand-in"


@dataclass(frozen=True)
class ScriptedAnswer:
    kind: str  # plan | code | prose
    text: str
    meta: dict[str, Any]


def _header(text: str, key: str) -> str | None:
    match = re.search(rf"^{re.escape(key)}:\s*(.+?)\s*$", text, re.MULTILINE)
    return match.group(1) if match else None


def _history(text: str) -> str:
    """The PM prompt's section on what was tried (a heading with "tried"), or ""."""
    match = re.search(r"^##[^\n]*tried[^\n]*\n(.*?)(?=^## |\Z)", text, re.M | re.S | re.I)
    return match.group(1) if match else ""


def prompt_sha256(messages: list[dict[str, Any]]) -> str:
    """Same canonical form as ``hpcagents.llm.interface.prompt_hash``."""
    canonical = json.dumps(messages, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class ScriptedModel:
    """The answering logic, without HTTP."""

    def __init__(self, kernels_dir: Path | None = None, stochastic: bool = False) -> None:
        self.kernels_dir = Path(kernels_dir or REPO_DIR / "kernels")
        self.stochastic = stochastic
        self._scripts: dict[str, dict[str, Any] | None] = {}

    def script(self, kernel: str) -> dict[str, Any] | None:
        if kernel not in self._scripts:
            path = self.kernels_dir / kernel / "scripted" / "script.yaml"
            self._scripts[kernel] = yaml.safe_load(path.read_text()) if path.is_file() else None
        return self._scripts[kernel]

    def _file(self, kernel: str, name: str) -> str:
        return (self.kernels_dir / kernel / "scripted" / name).read_text()

    def plan_strategies(
        self,
        strategies: list[dict[str, Any]],
        iteration: int,
        n: int,
        seed: int | None,
        history: str = "",
    ) -> list[dict[str, Any]]:
        """The N strategies the scripted PM proposes (see the module docstring)."""
        if self.stochastic:
            # Seeded by the request (the campaign seed and the iteration are in it), so a
            # replayed request gets the same plan; without a seed, by the iteration alone.
            order = list(strategies)
            random.Random(iteration if seed is None else seed).shuffle(order)
            tried = [s for s in order if re.search(rf"\b{re.escape(s['name'])}\b", history)]
            order = [s for s in order if s not in tried] + tried
            return [order[j % len(order)] for j in range(n)]
        start = (iteration - 1) * n
        return [strategies[(start + j) % len(strategies)] for j in range(n)]

    def answer(self, messages: list[dict[str, Any]], seed: int | None = None) -> ScriptedAnswer:
        users = [m for m in messages if m.get("role") == "user"]
        text = str(users[-1].get("content", "")) if users else ""
        # a re-ask carries the headers in the first user message
        first = str(users[0].get("content", "")) if users else ""
        head = text if _header(text, "Kernel") else first
        kernel = _header(head, "Kernel") or ""
        script = self.script(kernel) if kernel else None
        if script is None:
            return ScriptedAnswer(
                "prose",
                "I am the hpcagents scripted model, a stand-in for an LLM. I have no scripted "
                f"answer for this prompt (kernel {kernel!r}), so this reply contains no code.",
                {"role": "unknown", "kernel": kernel},
            )
        strategies = script["strategies"]
        if _header(head, "Strategies wanted"):
            iteration = int(_header(head, "Iteration") or 1)
            n = int(_header(head, "Strategies wanted") or 1)
            chosen = self.plan_strategies(strategies, iteration, n, seed, _history(head))
            plan = {
                "strategies": [{"name": s["name"], "description": s["description"]} for s in chosen]
            }
            body = (
                f"For iteration {iteration} I assign {n} different strategies, one per "
                f"programmer:\n\n```json\n{json.dumps(plan, indent=2)}\n```\n"
            )
            return ScriptedAnswer(
                "plan", body, {"role": "pm", "kernel": kernel, "iteration": iteration}
            )
        if _header(head, "PG"):
            name = _header(head, "Strategy") or ""
            attempt = int(_header(text, "Attempt") or _header(head, "Attempt") or 0)
            meta = {
                "role": "pg",
                "kernel": kernel,
                "iteration": int(_header(head, "Iteration") or 0),
                "pg": int(_header(head, "PG") or 0),
                "attempt": attempt,
                "strategy": name,
            }
            by_name = {s["name"]: s for s in strategies}
            note = ""
            if name not in by_name:
                strategy = strategies[0]
                note = f"(I do not know the strategy '{name}'; here is {strategy['name']}.)\n"
                answers = strategy["answers"][-1:]
            else:
                answers = by_name[name]["answers"]
            ans = answers[min(attempt, len(answers) - 1)]
            if "prose" in ans:
                return ScriptedAnswer("prose", ans["prose"].strip(), meta)
            code = self._file(kernel, ans["file"])
            intro = "Here is the fixed version." if attempt else f"Here is my {name} version."
            return ScriptedAnswer("code", f"{note}{intro}\n\n```c\n{code.rstrip()}\n```\n", meta)
        return ScriptedAnswer(
            "prose",
            "I am the hpcagents scripted model, a stand-in for an LLM; I only answer hpcagents "
            "PM and PG prompts. This reply contains no code.",
            {"role": "unknown", "kernel": kernel},
        )


class _Log:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.lock = threading.Lock()

    def write(self, entry: dict[str, Any]) -> None:
        if self.path is None:
            return
        line = json.dumps(entry, sort_keys=True) + "\n"
        with self.lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as fh:
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


class ScriptedServer:
    """A running server: ``.port``, ``.url``, ``.shutdown()`` (idempotent)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        kernels_dir: Path | None = None,
        log_path: Path | str | None = None,
        latency: float = 0.0,
        latency_per_token: float = 0.0,
        max_concurrency: int = 64,
        model: str = DEFAULT_MODEL,
        contention: float = 0.0,
        faults: tuple[str, ...] = (),
        fault_every: int = 0,
        fault_scope: str = "request",
        hang_s: float = 3600.0,
        structured_output: bool = True,
        instance: str | None = None,
        stochastic: bool = False,
    ) -> None:
        unknown = set(faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown fault mode(s) {sorted(unknown)}; known: {FAULTS}")
        self.model_logic = ScriptedModel(kernels_dir, stochastic=stochastic)
        self.contention = contention
        self.faults = tuple(faults)
        self.fault_every = fault_every
        self.fault_scope = fault_scope
        self._prompts_seen: dict[str, int] = {}
        self.hang_s = hang_s
        self.structured_output = structured_output
        # Identity token in /v1/models: whoever started this server can check that the
        # server answering on its port is its own, not another campaign's.
        self.instance = instance or uuid.uuid4().hex
        self._count_lock = threading.Lock()
        self._served = 0
        self._inflight = 0
        self._stop = threading.Event()
        self.log = _Log(Path(log_path) if log_path else None)
        self.latency = latency
        self.latency_per_token = latency_per_token
        self.slots = threading.BoundedSemaphore(max_concurrency)
        self.model = model
        self._httpd = ThreadingHTTPServer((host, port), self._handler())
        self._httpd.daemon_threads = True
        self.host = host
        self.port = self._httpd.server_address[1]
        self.url = f"http://{host}:{self.port}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._stopped = False

    @property
    def log_path(self) -> Path | None:
        return self.log.path

    @log_path.setter
    def log_path(self, value: Path | None) -> None:
        self.log.path = Path(value) if value else None

    def start(self) -> ScriptedServer:
        self._thread.start()
        return self

    def next_request(self, prompt: str = "") -> tuple[int, str | None]:
        """Number this request; the fault it gets (every ``fault_every``-th, in turn).

        ``fault_scope="request"`` counts requests as they arrive; ``"prompt"`` counts
        distinct prompts and faults only a prompt's first try, so which requests fault
        does not depend on how concurrent clients interleave (a retry is answered).
        """
        with self._count_lock:
            self._served += 1
            r = self._served
            if self.fault_scope == "prompt":
                if prompt in self._prompts_seen:
                    return r, None
                self._prompts_seen[prompt] = len(self._prompts_seen) + 1
                k = self._prompts_seen[prompt]
            else:
                k = r
        if self.faults and self.fault_every and k % self.fault_every == 0:
            return r, self.faults[(k // self.fault_every - 1) % len(self.faults)]
        return r, None

    def service_time(self, completion_tokens: int) -> float:
        """Like a batching server: grows with tokens and, mildly, with requests in flight."""
        with self._count_lock:
            inflight = self._inflight
        work = self.latency + self.latency_per_token * completion_tokens
        return work * (1.0 + self.contention * max(0, inflight - 1))

    def shutdown(self) -> None:
        self._stop.set()
        if self._stopped:
            return
        self._stopped = True
        self._httpd.shutdown()
        self._httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def _json(self, code: int, payload: dict[str, Any]) -> None:
                body = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802
                if self.path.rstrip("/") in ("/v1/models", "/models"):
                    self._json(
                        200,
                        {
                            "object": "list",
                            "data": [
                                {
                                    "id": server.model,
                                    "object": "model",
                                    "created": 0,
                                    "owned_by": OWNER,
                                    "max_model_len": 32768,
                                    "instance": server.instance,
                                    "stochastic": server.model_logic.stochastic,
                                }
                            ],
                        },
                    )
                elif self.path.rstrip("/") in ("/health", "/v1/health"):
                    self._json(200, {"status": "ok", "stand_in": True})
                else:
                    self._json(
                        404, {"error": {"message": f"no route {self.path}", "type": "not_found"}}
                    )

            def do_POST(self) -> None:  # noqa: N802
                if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
                    self._json(
                        404, {"error": {"message": f"no route {self.path}", "type": "not_found"}}
                    )
                    return
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                    req = json.loads(self.rfile.read(length) or b"")
                    messages = req["messages"]
                    if not isinstance(messages, list):
                        raise ValueError("messages must be a list")
                except (ValueError, KeyError, TypeError) as exc:
                    self._json(
                        400,
                        {
                            "error": {
                                "message": f"bad request: {exc}",
                                "type": "invalid_request_error",
                            }
                        },
                    )
                    return
                if "response_format" in req and not server.structured_output:
                    # like a server without guided decoding: refuse, the client asks again
                    self._json(
                        400,
                        {
                            "error": {
                                "message": "response_format is not supported by this server",
                                "type": "invalid_request_error",
                                "param": "response_format",
                            }
                        },
                    )
                    return
                number, fault = server.next_request(prompt_sha256(messages))
                entry = {
                    "time": time.time(),
                    "request": number,
                    "prompt_sha256": prompt_sha256(messages),
                    "model": req.get("model"),
                    "seed": req.get("seed"),
                    "fault": fault,
                }
                if fault in ("http500", "http429"):
                    code = 500 if fault == "http500" else 429
                    server.log.write({**entry, "kind": "error"})
                    self.send_response(code)
                    body = json.dumps(
                        {
                            "error": {
                                "message": f"scripted fault {fault}",
                                "type": "server_error",
                                "code": code,
                            }
                        }
                    ).encode()
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    if code == 429:
                        self.send_header("Retry-After", "0")
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if fault in ("hang", "die"):
                    server.log.write({**entry, "kind": "error"})
                    if fault == "hang":
                        server._stop.wait(server.hang_s)
                    self.close_connection = True
                    return  # no response at all: the client sees a timeout / a dropped connection
                with server.slots:
                    with server._count_lock:
                        server._inflight += 1
                    try:
                        seed = req.get("seed")
                        ans = server.model_logic.answer(
                            messages, seed if isinstance(seed, int) else None
                        )
                        prompt_text = "".join(str(m.get("content", "")) for m in messages)
                        p_tok, c_tok = _tokens(prompt_text), _tokens(ans.text)
                        time.sleep(server.service_time(c_tok))
                    finally:
                        with server._count_lock:
                            server._inflight -= 1
                text, finish = ans.text, "stop"
                if fault == "truncated":
                    text, finish = text[: max(1, len(text) * 2 // 5)], "length"
                elif fault == "garbage":
                    text = "\u00bf\u00bf lorem ipsum \x07 ### ``` %%%% tokens tokens }{ ]["
                elif fault == "invalid_json" and ans.kind == "plan":
                    text = text.replace('"strategies":', '"strategies"', 1)
                server.log.write({**entry, "kind": ans.kind, **ans.meta})
                cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
                usage = {
                    "prompt_tokens": p_tok,
                    "completion_tokens": c_tok,
                    "total_tokens": p_tok + c_tok,
                }
                if req.get("stream"):
                    self._stream(cid, text, usage, finish, slow=fault == "slow_stream")
                    return
                self._json(
                    200,
                    {
                        "id": cid,
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": server.model,
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": finish,
                                "message": {"role": "assistant", "content": text},
                            }
                        ],
                        "usage": usage,
                    },
                )

            def _stream(
                self, cid: str, text: str, usage: dict[str, int], finish: str, slow: bool
            ) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()

                def chunk(delta: dict[str, Any], finish: str | None) -> None:
                    payload = {
                        "id": cid,
                        "object": "chat.completion.chunk",
                        "created": int(time.time()),
                        "model": server.model,
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                    }
                    self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())

                chunk({"role": "assistant", "content": ""}, None)
                for start in range(0, len(text), 256):
                    if slow:
                        time.sleep(0.05)
                    chunk({"content": text[start : start + 256]}, None)
                chunk({}, finish)
                self.wfile.write(b"data: [DONE]\n\n")
                self.wfile.flush()
                self.close_connection = True

        return Handler


def serve(**options: Any) -> ScriptedServer:
    """Start the scripted model in a background thread and return it.

    ``options`` are those of :class:`ScriptedServer` (host, port, log_path, latency,
    faults, ...); the defaults listen on 127.0.0.1 on any free port.
    """
    options.setdefault("port", 0)
    if "faults" in options:
        options["faults"] = tuple(options["faults"])
    return ScriptedServer(**options).start()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 = any free port")
    parser.add_argument("--kernels-dir", default=str(REPO_DIR / "kernels"))
    parser.add_argument("--log", help="append one JSON line per request served")
    parser.add_argument("--port-file", help="write the bound port here once listening")
    parser.add_argument("--pid-file", help="write the server's pid here")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--latency-per-token", type=float, default=0.0)
    parser.add_argument("--max-concurrency", type=int, default=64)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument(
        "--contention",
        type=float,
        default=0.0,
        help="service time x (1 + contention x (requests in flight - 1))",
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        choices=FAULTS,
        help="fault mode (repeatable), applied to every --fault-every-th request",
    )
    parser.add_argument("--fault-every", type=int, default=0)
    parser.add_argument(
        "--fault-scope",
        choices=("request", "prompt"),
        default="request",
        help="count requests, or distinct prompts (fault only a prompt's first try)",
    )
    parser.add_argument(
        "--instance", help="identity token listed in /v1/models (default: a random one)"
    )
    parser.add_argument(
        "--stochastic",
        action="store_true",
        help="the PM draws its N strategies from the whole pool by the request's seed "
        "(different N and seeds explore differently; used by `hpcagents study`)",
    )


def run(args: argparse.Namespace) -> int:
    server = ScriptedServer(
        args.host,
        args.port,
        Path(args.kernels_dir),
        args.log,
        args.latency,
        args.latency_per_token,
        args.max_concurrency,
        args.model,
        args.contention,
        tuple(args.fault),
        args.fault_every,
        fault_scope=args.fault_scope,
        instance=args.instance,
        stochastic=args.stochastic,
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    if args.port_file:
        write_text_atomic(args.port_file, f"{server.port}\n")
    if args.pid_file:
        write_text_atomic(args.pid_file, f"{os.getpid()}\n")
    print(f"scripted model (a stand-in for an LLM, not a model) at {server.url}", flush=True)
    stop.wait()
    server.shutdown()
    return 0


def main(argv: list[str] | None = None, prog: str = "python -m hpcagents.scripted") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
