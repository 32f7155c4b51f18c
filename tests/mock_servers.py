"""Test doubles of real servers' HTTP surfaces, for what cannot run on this machine.

vLLM needs a GPU, Ollama a daemon and a model download; llama-cpp-python builds from
source for minutes. These small HTTP servers reproduce the parts of their behaviour the
pool must handle, each as the real server documents or does it:

* ``vllm``: ``/v1/models`` with ``owned_by: vllm`` and ``max_model_len``; HTTP 404
  "The model `x` does not exist." for an unknown model; HTTP 400 "This model's maximum
  context length is N tokens ..." for a prompt that does not fit; ``reasoning_content``
  beside the answer (a reasoning parser, e.g. gpt-oss), ``reasoning_tokens`` in usage.
* ``llama-cpp-python``: no context length anywhere; ``response_format`` json_schema
  refused with HTTP 500 "Input should be 'text' or 'json_object'"; any model name taken.
* ``ollama``: ``owned_by: library``; ``/api/show`` with ``num_ctx`` in ``parameters``.

The answers' content comes from the project's scripted model (a stand-in for an LLM):
these doubles stand in for servers' protocols, never for a model.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from hpcagents.scripted import ScriptedModel, prompt_sha256


class MockServer:
    def __init__(
        self,
        kind: str = "vllm",
        model: str = "openai/gpt-oss-120b",
        context: int = 32768,
        reasoning: bool = False,
        raw_newlines_in_json: bool = False,
        api_key: str | None = None,
        latency: float = 0.0,
        num_ctx: int | None = 8192,
        advertise_context: bool = True,
        answer_padding: int = 0,
    ) -> None:
        self.kind = kind
        self.model = model
        self.context = context
        self.reasoning = reasoning
        self.raw_newlines_in_json = raw_newlines_in_json
        self.api_key = api_key
        self.latency = latency
        self.num_ctx = num_ctx
        self.advertise_context = advertise_context  # False: like a proxy in front of vLLM
        self.answer_padding = answer_padding  # characters of noise after the answer (runaway)
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.logic = ScriptedModel()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.root = f"http://127.0.0.1:{self.port}"
        self.url = f"{self.root}/v1"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def shutdown(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def chat_requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.requests if r["path"].endswith("/chat/completions")]

    def _models(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"id": self.model, "object": "model", "created": 0}
        if self.kind == "vllm":
            entry.update(owned_by="vllm", root=self.model)
            if self.advertise_context:
                entry["max_model_len"] = self.context
        elif self.kind == "ollama":
            entry.update(owned_by="library")
        else:
            entry.update(owned_by="me")
        return {"object": "list", "data": [entry]}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

            def _json(self, code: int, payload: Any) -> None:
                body = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _authorised(self) -> bool:
                if server.api_key is None:
                    return True
                if self.headers.get("Authorization") == f"Bearer {server.api_key}":
                    return True
                self._json(401, {"error": {"message": "invalid API key", "code": 401}})
                return False

            def do_GET(self) -> None:  # noqa: N802
                with server._lock:
                    server.requests.append({"path": self.path, "time": time.time()})
                if not self._authorised():
                    return
                if self.path == "/v1/models":
                    self._json(200, server._models())
                else:
                    self._json(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                req = json.loads(self.rfile.read(length) or b"{}")
                entry = {
                    "path": self.path,
                    "time": time.time(),
                    "model": req.get("model"),
                    "temperature": req.get("temperature"),
                    "max_tokens": req.get("max_tokens"),
                    "response_format": (req.get("response_format") or {}).get("type"),
                    "reasoning_effort": req.get("reasoning_effort"),
                    "prompt_sha256": prompt_sha256(req.get("messages") or []),
                }
                with server._lock:
                    server.requests.append(entry)
                if not self._authorised():
                    return
                if self.path == "/api/show" and server.kind == "ollama":
                    params = f"num_ctx {server.num_ctx}\n" if server.num_ctx else ""
                    self._json(
                        200,
                        {"parameters": params, "model_info": {"llama.context_length": 131072}},
                    )
                    return
                if self.path != "/v1/chat/completions":
                    self._json(404, {"error": {"message": f"no route {self.path}"}})
                    return
                self._chat(req)

            def _chat(self, req: dict[str, Any]) -> None:
                messages = req.get("messages") or []
                if req.get("model") != server.model and server.kind == "vllm":
                    self._json(
                        404,
                        {
                            "object": "error",
                            "message": f"The model `{req.get('model')}` does not exist.",
                            "type": "NotFoundError",
                            "param": None,
                            "code": 404,
                        },
                    )
                    return
                fmt = (req.get("response_format") or {}).get("type")
                if server.kind == "llama-cpp-python" and fmt == "json_schema":
                    detail = [
                        {
                            "type": "literal_error",
                            "loc": ["body", "response_format", "type"],
                            "msg": "Input should be 'text' or 'json_object'",
                            "input": "json_schema",
                        }
                    ]
                    self._json(500, {"error": {"message": str(detail), "type": "internal"}})
                    return
                prompt_tokens = sum(len(str(m.get("content", ""))) for m in messages) // 4
                max_tokens = int(req.get("max_tokens") or 16)
                if server.kind == "vllm" and prompt_tokens + max_tokens > server.context:
                    self._json(
                        400,
                        {
                            "object": "error",
                            "message": (
                                f"This model's maximum context length is {server.context} "
                                f"tokens. However, you requested {prompt_tokens + max_tokens} "
                                f"tokens ({prompt_tokens} in the messages, {max_tokens} in "
                                f"the completion). Please reduce the length of the messages "
                                f"or completion."
                            ),
                            "type": "BadRequestError",
                            "code": 400,
                        },
                    )
                    return
                time.sleep(server.latency)
                answer = server.logic.answer(messages)
                text = answer.text + "~" * server.answer_padding
                if answer.kind == "plan" and server.raw_newlines_in_json:
                    # what local models write: a raw line break inside a JSON string
                    text = text.replace('"description": "', '"description": "In short:\n', 1)
                message: dict[str, Any] = {"role": "assistant", "content": text}
                usage: dict[str, Any] = {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": len(text) // 4,
                    "total_tokens": prompt_tokens + len(text) // 4,
                }
                if server.reasoning:
                    thought = "The user wants a plan; blocking for L2 first, then SIMD. " * 3
                    message["reasoning_content"] = thought
                    usage["completion_tokens_details"] = {"reasoning_tokens": len(thought) // 4}
                self._json(
                    200,
                    {
                        "id": f"chatcmpl-{uuid.uuid4().hex[:16]}",
                        "object": "chat.completion",
                        "created": int(time.time()),
                        "model": server.model,
                        "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
                        "usage": usage,
                    },
                )

        return Handler


def flock_waiters(path) -> int:
    """Processes blocked in ``flock`` on ``path`` right now (Linux ``/proc/locks``: a
    waiter's line carries ``->``). Lets a test wait for "the second request is waiting"
    instead of guessing with sleeps."""
    import os

    try:
        inode = os.stat(path).st_ino
        lines = open("/proc/locks").read().splitlines()
    except OSError:
        return 0
    return sum(
        1
        for line in lines
        if "->" in line and "FLOCK" in line and line.split()[-3].endswith(f":{inode}")
    )


def gate_answers(server, gate) -> None:
    """Hold every answer of a scripted-model ``server`` until ``gate`` (an Event) is set:
    a request stays in flight exactly as long as a test needs."""
    original = server.service_time

    def held(tokens: int) -> float:
        gate.wait(120)
        return original(tokens)

    server.service_time = held
