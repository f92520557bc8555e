"""``lmforge serve``: OpenAI's HTTP API over the sampler — replies equal the sampler's, streamed pieces
join to the reply, stop strings never leak, concurrent requests share sampler calls and get their own
rows back, seeds reproduce, bad requests are one-line 400s, and OpenAI's own client reads it all."""

import threading
import time

import pytest

from lmforge.cli.main import main
from lmforge.data.chat import TOOL_CALL, ChatFormat
from lmforge.infer import SamplingConfig
from lmforge.serve import Engine, Job, RowText, create_app

fastapi_testclient = pytest.importorskip("fastapi.testclient", reason="lmforge serve needs the serve extra (FastAPI)")

NAME = "tiny"   # what conftest's client serves (SERVED_NAME)
HI = [{"role": "user", "content": "Hi"}]


def chat(client, messages=HI, **kw):
    r = client.post("/v1/chat/completions", json={"model": NAME, "messages": messages, **kw})
    assert r.status_code == 200, r.text
    return r.json()


def events(text: str) -> list:
    """The JSON objects of a server-sent event stream, checking it ends in ``[DONE]``."""
    import json
    lines = [line.removeprefix("data: ") for line in text.split("\n\n") if line]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def sampler_reply(model, messages, max_new_tokens):
    fmt = ChatFormat(model.sampler.tok)
    prompt = fmt.prompt(messages).tolist()
    stops = (fmt.end_id, model.sampler.tok.eos_id)
    out = model.sampler.generate_ids([prompt], SamplingConfig(max_new_tokens=max_new_tokens, temperature=0.0,
                                                              stop_token_ids=stops))
    ids = out.tokens[0, :out.lengths[0]].tolist()
    return prompt, ids, out.logprobs[0, :out.lengths[0]].tolist(), stops


# ------------------------------------------------------------------------------------------ text
def test_row_text_holds_back_what_could_become_a_stop_string_and_cuts_before_one(model):
    tok = model.sampler.tok
    ids = tok.encode("total = 12 ## done")
    row = RowText(tok, skip=(), stops=("##", "= 9"))
    pieces = [row.push(i) for i in ids]
    assert "".join(pieces) + row.finish() == "total = 12 " and row.stopped
    sent = ""
    for i, piece in zip(ids, pieces):   # nothing sent could still turn out to be part of a stop string
        sent += piece
        assert not sent.endswith(("#", "=", "= "))
    free = RowText(tok, skip=(), stops=("= 9",))
    assert "".join(free.push(i) for i in ids) + free.finish() == "total = 12 ## done" and not free.stopped


# ------------------------------------------------------------------------------------------ replies
def test_a_chat_completion_is_the_samplers_greedy_reply(client, model):
    prompt, ids, logprobs, stops = sampler_reply(model, HI, 6)
    body = chat(client, max_tokens=6, temperature=0, logprobs=True)
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": model.sampler.tok.decode([t for t in ids if t not in stops])}
    assert choice["finish_reason"] == ("stop" if ids[-1] in stops else "length")
    assert body["usage"] == {"prompt_tokens": len(prompt), "completion_tokens": len(ids),
                             "total_tokens": len(prompt) + len(ids)}
    kept = [lp for t, lp in zip(ids, logprobs) if t not in stops]
    assert [c["logprob"] for c in choice["logprobs"]["content"]] == pytest.approx(kept, abs=1e-5)
    assert b"".join(bytes(c["bytes"]) for c in choice["logprobs"]["content"]).decode("utf-8", "replace") \
        == choice["message"]["content"]
    assert body["object"] == "chat.completion" and body["model"] == NAME and body["id"].startswith("chatcmpl-")


def test_streamed_pieces_join_to_the_reply_and_a_seed_reproduces_it(client):
    kw = dict(max_tokens=12, temperature=1.0, n=3, seed=7)
    whole = chat(client, **kw)
    again = chat(client, **kw)
    assert again["choices"] == whole["choices"] and again["id"] != whole["id"]
    texts = [c["message"]["content"] for c in whole["choices"]]
    assert len(set(texts)) > 1                      # three samples, not three copies
    r = client.post("/v1/chat/completions", json={"model": NAME, "messages": HI, "stream": True,
                                                  "stream_options": {"include_usage": True}, **kw})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    chunks = events(r.text)
    joined, finish = ["", "", ""], [None] * 3
    for chunk in chunks[:-1]:
        (choice,) = chunk["choices"]
        joined[choice["index"]] += choice["delta"].get("content", "")
        finish[choice["index"]] = choice["finish_reason"] or finish[choice["index"]]
    assert joined == texts and finish == [c["finish_reason"] for c in whole["choices"]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]


def test_a_stop_string_ends_the_reply_before_it_streamed_or_not(client):
    r = client.post("/v1/completions", json={"model": NAME, "prompt": "def f(x):", "max_tokens": 24, "temperature": 0})
    text = r.json()["choices"][0]["text"]
    cut = next((i for i in range(1, len(text) - 2) if text[i:i + 2].isascii() and text[i:i + 2].isprintable()
                and text.index(text[i:i + 2]) == i), None)
    if cut is None:
        pytest.skip(f"the random model's reply {text!r} has no printable pair to stop at")
    stop = text[cut:cut + 2]
    body = {"model": NAME, "prompt": "def f(x):", "max_tokens": 24, "temperature": 0, "stop": [stop, "zzzz"]}
    choice = client.post("/v1/completions", json=body).json()["choices"][0]
    assert choice["text"] == text[:cut] and choice["finish_reason"] == "stop"
    streamed = events(client.post("/v1/completions", json={**body, "stream": True}).text)
    assert "".join(c["choices"][0]["text"] for c in streamed) == text[:cut]
    assert streamed[-1]["choices"][0]["finish_reason"] == "stop"


def test_text_completions_take_a_list_of_prompts(client, model):
    body = client.post("/v1/completions", json={"model": NAME, "prompt": ["import os", "class A:"], "n": 2,
                                                "max_tokens": 5, "temperature": 0, "logprobs": 0}).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    texts = [c["text"] for c in body["choices"]]
    assert texts[0] == texts[1] and texts[2] == texts[3]   # greedy: n copies of each prompt's reply
    assert texts == [model.sampler.complete([p], SamplingConfig(max_new_tokens=5, temperature=0.0))[0]
                     for p in ("import os", "import os", "class A:", "class A:")]
    for choice in body["choices"]:   # each token's share of the text, a split character on its last token
        lp = choice["logprobs"]
        assert "".join(lp["tokens"]) == choice["text"] and len(lp["token_logprobs"]) == len(lp["text_offset"])
        assert all(choice["text"][o:].startswith(t) for o, t in zip(lp["text_offset"], lp["tokens"]))
    prompt_tokens = sum(len(model.sampler.encode_prompt(p)) for p in ("import os", "class A:"))
    assert body["usage"]["prompt_tokens"] == prompt_tokens
    ids = model.sampler.encode_prompt("class A:")   # token ids are taken as they are
    by_ids = client.post("/v1/completions", json={"model": NAME, "prompt": ids, "max_tokens": 5, "temperature": 0})
    assert by_ids.json()["choices"][0]["text"] == texts[2]
    bad = client.post("/v1/completions", json={"model": NAME, "prompt": [[1, 2], [3, 99999]], "max_tokens": 2})
    assert bad.status_code == 400 and bad.json()["error"]["message"].startswith(
        f"prompt.1: expected token ids in [0, {model.sampler.tok.vocab_size}), got [99999]")


def test_top_logprobs_list_the_most_likely_tokens_best_first(client, model):
    """Chat ``top_logprobs``: K alternatives per token, best first; greedy, the first is the token itself
    with exactly its log-prob. Completions' legacy ``logprobs: K``: one {text: log-prob} per token."""
    body = chat(client, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3)
    content = body["choices"][0]["logprobs"]["content"]
    assert content
    for entry in content:
        top = entry["top_logprobs"]
        assert len(top) == 3 and [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)
        assert top[0]["token"] == entry["token"] and top[0]["logprob"] == entry["logprob"]
        assert top[0]["bytes"] == entry["bytes"]
    assert body["choices"][0]["message"] == chat(client, max_tokens=6, temperature=0)["choices"][0]["message"]
    legacy = client.post("/v1/completions", json={"model": NAME, "prompt": "import os", "max_tokens": 4,
                                                  "temperature": 0, "logprobs": 2}).json()["choices"][0]["logprobs"]
    assert len(legacy["top_logprobs"]) == len(legacy["tokens"])
    for text, lp, top in zip(legacy["tokens"], legacy["token_logprobs"], legacy["top_logprobs"]):
        assert 1 <= len(top) <= 2 and max(top.values()) == lp   # greedy: the token is the best (a text may repeat)


def test_echo_with_logprobs_is_what_lm_eval_harness_scores_a_continuation_by(client, model):
    """``echo: true, logprobs: 1, max_tokens: 1`` — lm-evaluation-harness's ``local-completions``
    loglikelihood request — read by the harness's own parser gives the log-likelihood and greediness
    ``lmforge.eval.scoring.Scorer`` computes for the same (context, continuation)."""
    pytest.importorskip("lm_eval", reason="the harness's parser comes from lm-eval (the test extra)")
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    from lmforge.eval.scoring import Scorer, encode_pair

    tok = model.sampler.tok
    scorer = Scorer.from_sampler(model.sampler)
    pairs = [encode_pair(tok, "The capital of France is", " Paris"), encode_pair(tok, "def f(x):", " return x")]
    greedy_ids = model.sampler.generate_ids([pairs[1][0]], SamplingConfig(max_new_tokens=3, temperature=0.0))
    pairs.append((pairs[1][0], greedy_ids.tokens[0, :3].tolist()))            # a continuation that is greedy
    body = client.post("/v1/completions", json={"model": NAME, "prompt": [c + x for c, x in pairs], "temperature": 0,
                                                "max_tokens": 1, "logprobs": 1, "echo": True, "seed": 1234}).json()
    parsed = LocalCompletionsAPI.parse_logprobs(body, ctxlens=[len(c) for c, _ in pairs])
    want = scorer.score(pairs)
    assert [g for _, g in parsed] == [s.greedy for s in want] and want[2].greedy
    assert [lp for lp, _ in parsed] == pytest.approx([s.logprob for s in want], abs=1e-4)
    for (ctx, cont), choice in zip(pairs, body["choices"]):
        lp = choice["logprobs"]
        assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
        assert len(lp["tokens"]) == len(ctx) + len(cont) + 1          # the prompt, then the one sampled token
        assert choice["text"].startswith(tok.decode(ctx + cont))
    text = client.post("/v1/completions", json={"model": NAME, "prompt": "import os", "max_tokens": 2,
                                                "temperature": 0, "echo": True}).json()["choices"][0]
    assert text["text"].startswith("import os") and text["logprobs"] is None
    r = client.post("/v1/completions", json={"model": NAME, "prompt": "a", "echo": True, "stream": True})
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("echo: not supported with stream: true")


CALCULATOR = {"type": "function", "function": {"name": "calc", "description": "sums"}}


def test_tools_are_shown_to_the_model_and_its_calls_come_back_as_tool_calls(model, scripted):
    """``tools``: the schemas go into the prompt through the chat template; a reply with two calls comes
    back as two ``tool_calls`` (OpenAI's shape, read by OpenAI's own types), the text before them as
    content; the next request's assistant ``tool_calls`` and ``tool`` results render as the template
    writes calls and results; ``parallel_tool_calls: false`` keeps one call; ``tool_choice: "none"``
    shows no tools and reads no call; a call that is not JSON is plain content."""
    openai_types = pytest.importorskip("openai.types.chat", reason="OpenAI's types come with the openai client")
    from lmforge.data.chat import format_call

    calls = format_call("calc", x="37*91") + format_call("calc", x="2+2")
    replies = [f"Let me see. {calls}", "It is 3367.", f"Let me see. {calls}", calls, "<|tool_call|>calc(1)"]
    seen = []
    app = create_app(scripted(model, replies, seen), model_name=NAME, batch_wait_ms=0)
    ask = [{"role": "user", "content": "What is 37*91?"}]
    with fastapi_testclient.TestClient(app) as c:
        first = c.post("/v1/chat/completions", json={"model": NAME, "messages": ask, "tools": [CALCULATOR]}).json()
        openai_types.ChatCompletion.model_validate(first)
        choice = first["choices"][0]
        assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] == "Let me see."
        got = [(t["function"]["name"], t["function"]["arguments"]) for t in choice["message"]["tool_calls"]]
        assert got == [("calc", '{"x": "37*91"}'), ("calc", '{"x": "2+2"}')]
        assert all(t["id"].startswith("call_") and t["type"] == "function" for t in choice["message"]["tool_calls"])
        assert seen[0] == [model.template.prompt(ask, tools=[CALCULATOR]).tolist()]
        assert '"name": "calc", "description": "sums"' in model.sampler.tok.decode(seen[0][0])
        history = ask + [choice["message"]] + [{"role": "tool", "tool_call_id": t["id"], "content": r}
                                               for t, r in zip(choice["message"]["tool_calls"], ("3367", "4"))]
        second = c.post("/v1/chat/completions", json={"model": NAME, "messages": history, "tools": [CALCULATOR]}).json()
        assert second["choices"][0]["message"] == {"role": "assistant", "content": "It is 3367."}
        assert second["choices"][0]["finish_reason"] == "stop"
        rendered = ask + [{"role": "assistant", "content": f"Let me see.{calls}"},
                          {"role": "tool", "content": "3367"}, {"role": "tool", "content": "4"}]
        assert seen[1] == [model.template.prompt(rendered, tools=[CALCULATOR]).tolist()]
        one = c.post("/v1/chat/completions", json={"model": NAME, "messages": ask, "tools": [CALCULATOR],
                                                   "parallel_tool_calls": False}).json()["choices"][0]
        assert len(one["message"]["tool_calls"]) == 1
        off = c.post("/v1/chat/completions", json={"model": NAME, "messages": ask, "tools": [CALCULATOR],
                                                   "tool_choice": "none"}).json()["choices"][0]
        assert seen[3] == [model.template.prompt(ask).tolist()] and off["finish_reason"] == "stop"
        assert off["message"] == {"role": "assistant", "content": calls.replace(TOOL_CALL, "")}   # specials hidden
        broken = c.post("/v1/chat/completions", json={"model": NAME, "messages": ask, "tools": [CALCULATOR]}).json()
        assert broken["choices"][0]["finish_reason"] == "stop" and "tool_calls" not in broken["choices"][0]["message"]
        bad = c.post("/v1/chat/completions", json={"model": NAME, "messages": [{"role": "user", "content": "x", "tool_calls": [
            {"type": "function", "function": {"name": "f", "arguments": "{}"}}]}]})
        assert bad.status_code == 400 and bad.json()["error"]["message"].startswith(
            "messages.0.tool_calls: only an assistant message calls tools")


# ------------------------------------------------------------------------------------------ batching
def test_concurrent_requests_share_a_sampler_call_and_each_gets_its_own_rows(model):
    asks = [("Hi", 3), ("What is 2 + 2?", 5), ("Name a colour.", 7), ("Hello there, who are you?", 9)]
    alone = {}
    app = create_app(model, model_name=NAME, max_batch=8, batch_wait_ms=0)
    with fastapi_testclient.TestClient(app) as c:
        for text, limit in asks:
            alone[text] = chat(c, [{"role": "user", "content": text}], max_tokens=limit, temperature=0)
    app = create_app(model, model_name=NAME, max_batch=8, batch_wait_ms=2000)
    replies = {}
    with fastapi_testclient.TestClient(app) as c:
        def ask(text, limit):
            replies[text] = chat(c, [{"role": "user", "content": text}], max_tokens=limit, temperature=0)
        threads = [threading.Thread(target=ask, args=a) for a in asks]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        calls = list(app.state.engine.batches)
    assert max(calls) > 1 and sum(calls) == len(asks), calls    # some requests shared a call
    for text, limit in asks:
        got, want = replies[text]["choices"][0], alone[text]["choices"][0]
        assert got["message"] == want["message"] and got["finish_reason"] == want["finish_reason"]
        assert replies[text]["usage"] == alone[text]["usage"]
        assert replies[text]["usage"]["completion_tokens"] <= limit


def test_a_cancelled_job_stops_its_call_at_the_next_step(model):
    engine = Engine(model, max_batch=4, batch_wait_ms=0)
    done, pieces = threading.Event(), []
    result = []
    job = Job(prompts=[model.sampler.encode_prompt("def")], stop_ids=(),
              sampling=SamplingConfig(max_new_tokens=60, temperature=1.0), seed=0,
              on_done=lambda res: (result.append(res), done.set()), on_piece=None)

    def on_piece(row, text):
        pieces.append(text)
        if len(pieces) == 3:
            job.cancelled.set()
    job.on_piece = on_piece
    engine.submit(job)
    assert done.wait(120)
    engine.close()
    (row,) = result[0]
    assert row.finish_reason == "cancelled" and len(row.tokens) < 60


# ------------------------------------------------------------------------------------------ bad requests
@pytest.mark.parametrize("body, status, message", [
    ({"max_tokns": 8}, 400, "max_tokns: unknown parameter (did you mean 'max_tokens'?)"),
    ({"model": "gpt-4o"}, 404, "model: 'gpt-4o' is not served here; this server serves 'tiny'"),
    ({"max_tokens": 500}, 400, "this model's maximum context length is 128 tokens"),
    ({"max_tokens": 0}, 400, "max_tokens: Input should be greater than or equal to 1"),
    ({"temperature": -1}, 400, "temperature: expected a finite number in [0, 2], got -1.0"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "required"}, 400,
     'tool_choice: "required" would force a call, which needs constrained decoding'),
    ({"tools": [{"type": "function", "function": {"name": "f"}}], "stream": True}, 400,
     "tools: not supported with stream: true"),
    ({"tools": [{"type": "function"}]}, 400, "tools.0.function: required"),
    ({"top_logprobs": 3}, 400, "top_logprobs: 3 alternatives need logprobs: true"),
    ({"top_logprobs": 21, "logprobs": True}, 400, "top_logprobs: Input should be less than or equal to 20"),
    ({"presence_penalty": 0.5}, 400, "presence_penalty: not supported"),
    ({"messages": [{"role": "robot", "content": "Hi"}]}, 400, "messages.0.role: Input should be 'system'"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, 400,
     "messages.0.content.0.type: Input should be 'text'"),
    ({"messages": []}, 400, "messages: List should have at least 1 item"),
    ({"stop": ["a", "b", "c", "d", "e"]}, 400, "stop: expected at most 4 non-empty strings"),
    ({"n": 9}, 400, "n: 1 prompt(s) x n=9 = 9 rows; this server samples at most 8"),
    ({"messages": [{"role": "user", "contnt": "Hi"}]}, 400, "messages.0.contnt: unknown parameter (did you mean 'content'?)"),
    ({"messages": [{"role": "user", "content": None}]}, 400, "messages: a user message needs content"),
    ({"max_completion_tokens": 1000}, 400, "this model's maximum context length is 128 tokens; the prompt takes 6 and "
                                           "max_completion_tokens asks for 1000 more"),
    ({"response_format": {"type": "json_object"}}, 400, "response_format: not supported"),
    ({"store": True}, 400, "store: Input should be False"),
    ({"stream": True, "logprobs": True}, 400, "logprobs: not supported with stream: true"),
    ({"stream_options": {"include_usage": True}}, 400, "stream_options: only with stream: true"),
])
def test_a_bad_request_is_a_one_line_openai_error(client, body, status, message):
    r = client.post("/v1/chat/completions", json={"model": NAME, "messages": HI, **body})
    assert r.status_code == status
    error = r.json()["error"]
    assert error["message"].startswith(message) and "\n" not in error["message"], error
    assert error["type"] == "invalid_request_error"


def test_fields_that_ask_nothing_of_the_sampler_are_taken(client):
    body = chat(client, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                         {"role": "assistant", "content": None}, {"role": "user", "content": "Again"}],
                max_tokens=2, temperature=0, store=False, metadata={"run": "a"}, service_tier="auto", user="u1",
                response_format={"type": "text"})
    assert body["choices"][0]["finish_reason"] in ("stop", "length")


def test_not_json_an_empty_body_a_wrong_route_and_a_missing_model_are_named(client):
    r = client.post("/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["message"].startswith("the request body is not valid JSON")
    r = client.post("/v1/chat/completions", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["message"] == "the request body is empty; expected a JSON object"
    r = client.get("/v1/chat/completions")
    assert r.status_code == 405 and r.json()["error"]["message"] == "GET /v1/chat/completions: Method Not Allowed"
    r = client.get("/v1/embeddings")
    assert r.status_code == 404 and "this server answers /v1/chat/completions" in r.json()["error"]["message"]
    assert client.get(f"/v1/models/{NAME}").json()["id"] == NAME
    assert client.get("/v1/models/other").status_code == 404
    r = client.post("/v1/completions", json={"prompt": "x"})
    assert r.status_code == 400 and r.json()["error"] == {"message": "model: required", "type": "invalid_request_error",
                                                           "param": "model", "code": None}
    assert client.get("/v1/models").json()["data"][0]["id"] == NAME


def test_serve_on_a_folder_without_a_model_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a run")
    assert main(["serve", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("lmforge: error: ") and str(tmp_path) in err and "\n" not in err
    assert main(["serve", str(tmp_path), "--max-batch", "0"]) == 2
    assert "--max-batch" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ OpenAI's client
def test_openais_client_talks_to_the_running_server(model):
    openai = pytest.importorskip("openai", reason="the reference client (openai) is not installed")
    portpicker = pytest.importorskip("portpicker")
    import uvicorn

    port = portpicker.pick_unused_port()
    server = uvicorn.Server(uvicorn.Config(create_app(model, model_name=NAME), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
            time.sleep(0.05)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)
        assert [m.id for m in client.models.list()] == [NAME]
        reply = client.chat.completions.create(model=NAME, messages=HI, max_tokens=6, temperature=0, seed=1)
        assert reply.choices[0].message.role == "assistant" and reply.usage.completion_tokens >= 1
        stream = client.chat.completions.create(model=NAME, messages=HI, max_tokens=6, temperature=0, seed=1,
                                                stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == reply.choices[0].message.content
        text = client.completions.create(model=NAME, prompt="def", max_tokens=4, temperature=0)
        assert text.choices[0].finish_reason in ("stop", "length")
        # the client sends null for an argument of None: the default
        nulls = client.chat.completions.create(model=NAME, messages=HI, max_tokens=6, temperature=0, seed=1, top_p=None,
                                               n=None, stream=None, presence_penalty=None, frequency_penalty=None,
                                               logprobs=None, top_logprobs=None, stop=None, extra_body={"top_k": None})
        assert nulls.choices[0].message.content == reply.choices[0].message.content
        again = client.completions.create(model=NAME, prompt="def", max_tokens=4, temperature=0, echo=None,
                                          logprobs=None, n=None, seed=None, top_p=None)
        assert again.choices[0].text == text.choices[0].text
        with pytest.raises(openai.BadRequestError, match="max_tokens: Input should be greater than or equal to 1"):
            client.chat.completions.create(model=NAME, messages=HI, max_tokens=0)
        with pytest.raises(openai.NotFoundError, match="not served here"):
            client.chat.completions.create(model="gpt-4o", messages=HI)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
