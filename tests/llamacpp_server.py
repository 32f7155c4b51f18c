"""A real llama.cpp HTTP server on a tiny random-weight GGUF model, for tests.

The server is llama.cpp's own (``server_context``, ``server_routes``, cpp-httplib: the
code of the ``llama-server`` executable), as compiled into the ``xllamacpp`` wheel from
PyPI: the prebuilt CPU build that installs in seconds, where ``llama-cpp-python[server]``
compiles for about 7 minutes and Debian 12 packages no llama.cpp. The model is made here
with the ``gguf`` package: a one-layer llama with a byte-level vocabulary and random
weights, about 120 KB. Its answers are noise, by design: it exercises a real server's
protocol, context limits, structured output and errors, never a model's skill.

Run: ``python tests/llamacpp_server.py --ctx 4096`` prints ``listening <url>`` once ready.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
from pathlib import Path

ALIAS = "tiny-random-llama"


def make_tiny_gguf(path: Path, n_ctx_train: int = 32768, seed: int = 0) -> Path:
    """Write a random-weight llama-architecture GGUF with a 264-token byte vocabulary."""
    import gguf
    import numpy as np

    n_embd, n_head, n_ff, n_layer = 32, 2, 64, 1
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("hpcagents tiny random llama (test fixture, not a model)")
    w.add_context_length(n_ctx_train)
    w.add_embedding_length(n_embd)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head)
    w.add_rope_dimension_count(n_embd // n_head)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += ["\u2581", "{", "}", '"', ":"]
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    types += [gguf.TokenType.BYTE] * 256 + [gguf.TokenType.NORMAL] * 5
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * len(tokens))
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_chat_template(
        "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant: {% endif %}"
    )

    def tensor(name: str, *shape: int) -> None:
        w.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(np.float32))

    vocab = len(tokens)
    tensor("token_embd.weight", vocab, n_embd)
    w.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))
    tensor("output.weight", vocab, n_embd)
    for i in range(n_layer):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            tensor(f"blk.{i}.{name}.weight", n_embd, n_embd)
        tensor(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
        tensor(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
        tensor(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ctx", type=int, default=4096, help="the server's context (n_ctx)")
    parser.add_argument("--model", help="a GGUF file (default: make the tiny random one)")
    parser.add_argument("--parallel", type=int, default=2)
    args = parser.parse_args(argv)
    import xllamacpp

    model = args.model
    if model is None:
        model = str(make_tiny_gguf(Path(tempfile.mkdtemp(prefix="tiny-gguf-")) / "tiny.gguf"))
    params = xllamacpp.CommonParams()
    params.model.path = model
    params.model_alias = {ALIAS}
    params.n_ctx = args.ctx * args.parallel  # llama.cpp splits n_ctx over its slots
    params.n_parallel = args.parallel
    params.hostnames = ["127.0.0.1"]
    params.port = 0
    params.cpuparams.n_threads = 1
    params.cpuparams_batch.n_threads = 1
    server = xllamacpp.Server(params)
    print(f"listening {server.listening_address}/v1", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
