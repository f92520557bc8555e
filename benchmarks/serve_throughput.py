"""``lmforge serve`` under concurrent clients: batched sampler calls against one request per call.

    python benchmarks/serve_throughput.py                                  # random quickstart-shaped model, CPU
    python benchmarks/serve_throughput.py --source runs/sft-... --clients 32 --max-batch 1 8 32

What is timed: a real HTTP server (uvicorn on a free local port, in this process) over a model, and
``--clients`` threads that each send ``--requests`` chat completions one after another (httpx, the
client OpenAI's SDK stands on) with ``max_tokens=--max-tokens`` at temperature 0.8. Each value of
``--max-batch`` gets its own server; the servers are measured in turns (``--rounds`` of each, the
order alternating), after ``--warmup`` untimed turns of each that compile the shapes a turn meets
(the batch, prompt-width and reply-length buckets of ``infer.text``; ``compiles`` counts any new
ones a timed turn still met, each a stall of seconds on a CPU). Per turn:
requests/s, completion tokens/s (``usage.completion_tokens`` summed: every sampled token), the
median and 90th-percentile request latency, and the mean rows per sampler call. The last line gives
each setting's median tokens/s over its turns and its ratio to the first setting's.

Without ``--source`` the model is random weights of the quickstart's shape (GPT-2, 4 layers, 128
dim, context 128) with a 512-id SentencePiece tokenizer trained on Python's docs (lmforge's chat
specials): the numbers are the server's and sampler's, not a trained model's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import statistics
import sys
import tempfile
import threading
import time

import jax
from flax import nnx


def random_model_folder(folder: pathlib.Path) -> pathlib.Path:
    from lmforge.data import SourceConfig, TokenizerConfig, read_documents, train_tokenizer
    from lmforge.model import DEFAULT_RULES, ModelConfig, build_model, create_sharded
    from lmforge.serve.chat import one_device_mesh
    from lmforge.weights import save_model_folder

    corpus = "\n".join(read_documents(SourceConfig(kind="python_docs")))[:200_000]
    tok = train_tokenizer(TokenizerConfig(vocab_size=512, num_reserved=0, max_train_chars=200_000), [corpus],
                          folder / "tokenizer")
    cfg = ModelConfig.gpt2(num_layers=4, num_heads=4, embed_dim=128, mlp_dim=512, max_seq_len=128,
                           vocab_size=tok.vocab_size)
    _, params, _ = create_sharded(lambda: build_model(cfg, rngs=nnx.Rngs(0)), one_device_mesh(), DEFAULT_RULES)
    save_model_folder(folder, cfg, params)
    return folder


class Server:
    """``create_app`` under uvicorn on a free port, in a thread."""

    def __init__(self, model, max_batch: int):
        import portpicker
        import uvicorn

        from lmforge.serve import create_app

        self.app = create_app(model, model_name="bench", max_batch=max_batch, batch_wait_ms=5.0)
        self.port = portpicker.pick_unused_port()
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.05)

    def close(self):
        self.server.should_exit = True
        self.thread.join(timeout=60)


def load(server: Server, clients: int, requests: int, max_tokens: int) -> dict:
    """Every client's requests, one after another; returns the turn's figures."""
    import httpx

    latencies, tokens, errors = [], [], []
    questions = ["What is a list?", "How do I open a file in Python?", "Explain recursion.", "Hi!",
                 "Write a function that adds two numbers.", "What does `yield` do?"]

    def client(c: int):
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}/v1", timeout=600) as http:
            for r in range(requests):
                body = {"model": "bench", "max_tokens": max_tokens, "temperature": 0.8,
                        "messages": [{"role": "user", "content": questions[(c + r) % len(questions)]}]}
                start = time.perf_counter()
                reply = http.post("/chat/completions", json=body)
                latencies.append(time.perf_counter() - start)
                if reply.status_code != 200:
                    errors.append(reply.text)
                    continue
                tokens.append(reply.json()["usage"]["completion_tokens"])

    from lmforge.infer import sampler as sampler_module

    calls_before, compiles_before = len(server.app.state.engine.batches), sampler_module._generate._cache_size()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} request(s) failed, e.g. {errors[0]}")
    calls = server.app.state.engine.batches[calls_before:]
    latencies.sort()
    return {"requests_per_s": round(len(tokens) / wall, 2), "tokens_per_s": round(sum(tokens) / wall, 1),
            "latency_median_s": round(statistics.median(latencies), 3),
            "latency_p90_s": round(latencies[int(0.9 * (len(latencies) - 1))], 3),
            "rows_per_call": round(sum(calls) / len(calls), 2), "sampler_calls": len(calls),
            "completion_tokens": sum(tokens), "wall_s": round(wall, 2),
            "compiles": sampler_module._generate._cache_size() - compiles_before}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", help="a run, model or transformers folder (default: a random quickstart-shaped model)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=4, help="per client, one after another")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--max-batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2, help="untimed turns of each server first (compiling)")
    args = parser.parse_args(argv)
    if min(args.clients, args.requests, args.max_tokens, args.rounds, *args.max_batch) < 1:
        parser.error("--clients, --requests, --max-tokens, --rounds and --max-batch must be >= 1")
    from lmforge.serve import load_chat_model

    with tempfile.TemporaryDirectory() as tmp:
        with contextlib.redirect_stdout(sys.stderr):   # stdout is the JSON lines alone
            source = pathlib.Path(args.source) if args.source else random_model_folder(pathlib.Path(tmp) / "model")
        model = load_chat_model(source)
        servers = {b: Server(model, b) for b in args.max_batch}
        try:
            results: dict[int, list[float]] = {b: [] for b in args.max_batch}
            for _ in range(args.warmup):   # untimed: compiles the shapes (batch, prompt and reply buckets) a turn meets
                for b, server in servers.items():
                    load(server, args.clients, args.requests, args.max_tokens)
            for r in range(args.rounds):
                order = args.max_batch if r % 2 == 0 else args.max_batch[::-1]
                for b in order:
                    figures = load(servers[b], args.clients, args.requests, args.max_tokens)
                    results[b].append(figures["tokens_per_s"])
                    print(json.dumps({"benchmark": "serve_throughput", "round": r, "max_batch": b,
                                      "clients": args.clients, "requests_per_client": args.requests,
                                      "max_tokens": args.max_tokens, **figures,
                                      "device": jax.devices()[0].device_kind}), flush=True)
        finally:
            for server in servers.values():
                server.close()
    first = statistics.median(results[args.max_batch[0]])
    print(json.dumps({"benchmark": "serve_throughput", "summary": {
        str(b): {"tokens_per_s_median": statistics.median(v), "ratio": round(statistics.median(v) / first, 2)}
        for b, v in results.items()}, "source": str(args.source or "random quickstart-shaped model")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
