"""``lmforge serve``: an OpenAI-compatible HTTP server over the one sampler.

    lmforge serve runs/sft-... --port 8000 --max-batch 16

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="-")
    client.chat.completions.create(model="sft-...", messages=[{"role": "user", "content": "Hi"}])

Endpoints, in the shapes of OpenAI's API (what its Python client, vLLM's server and
lm-evaluation-harness' ``local-chat-completions`` read): ``POST /v1/chat/completions`` (the model's
chat template, as ``lmforge chat`` renders it), ``POST /v1/completions`` (raw text or token ids; one
prompt or a list), ``GET /v1/models`` and ``/v1/models/{id}``, ``GET /health``; ``stream: true``
answers in server-sent events ending in ``data: [DONE]``, with ``stream_options.include_usage`` for a
closing usage chunk.

Choices:
- FastAPI + uvicorn (well-kept, and what vLLM's and SGLang's servers stand on) parse and answer
  HTTP; the request bodies are pydantic models (``lmforge.serve.requests``) that forbid unknown fields. Any bad request is a 400
  with OpenAI's error object and a one-line message naming the field (``max_tokens: Input should be
  greater than or equal to 1``; an unknown field gets the nearest known name), a model name other than
  the served one a 404, as OpenAI answers them; so are an unknown path and a wrong method. Fields of
  OpenAI's API that this server cannot honour (a ``response_format`` other than text, penalties,
  ``logit_bias``, ``suffix``, ``best_of``, ``tool_choice`` that forces a call, ``logprobs``, ``echo``
  or ``tools`` while streaming, a message's ``name``) are refused by name when set, never silently
  ignored; fields that ask nothing of a sampler (``user``, ``metadata``, ``service_tier``, ``store:
  false``) are taken. ``top_k`` is taken, as vLLM takes it. Types are strict (``"max_tokens": "5"`` is
  a 400, ``"temperature": 1`` is taken), and an explicit ``null`` means the default, as OpenAI's spec
  types its optional parameters (``lmforge.serve.requests``).
- ``seed``: any signed 64-bit integer (OpenAI's type; outside it a 400 naming ``seed``, before any
  stream starts); distinct seeds give distinct streams (``lmforge.infer.text.seed_key`` folds the
  high 32 bits in, where ``jax.random.key`` would drop them).
- Special tokens typed in a chat message (``"<|end|>\\n<|system|>..."``) cannot forge a turn:
  lmforge's chat format encodes them as plain text (``ChatFormat``'s ``plain_content``: the
  client's words reach the model as the client wrote them, as OpenAI treats ``content``), and an
  imported model's template, which tokenizes its rendered text whole, refuses them with a 400 naming
  ``messages.{i}.content`` and the token. ``/v1/completions`` takes its prompt raw, specials included.
- One engine thread owns the model: JAX runs one sampler call at a time. Requests queue; each call
  takes the queued requests that can share it — the same sampling settings (temperature, top-p,
  top-k, ``n``, stop strings; ``max_tokens`` may differ: each row has its own limit) and no ``seed``
  — up to ``max_batch`` rows, waiting at most ``batch_wait_ms`` for more to arrive after the first.
  Queued requests that cannot join wait for a later call, in order. A request with a ``seed`` runs
  alone with that seed, so the same request and seed give the same reply whatever else is queued.
- A prompt plus its ``max_tokens`` must fit the model's context: otherwise a 400 says by how much
  (OpenAI's and vLLM's behaviour; ``lmforge chat`` crops instead, a server must not silently drop a
  client's text); a prompt that alone fills the context names ``messages`` / ``prompt``. Without
  ``max_tokens`` a chat reply gets ``default_max_tokens`` (``--default-max-tokens``, 256) and a text
  completion 16 (OpenAI's default for ``/v1/completions``, as vLLM's), or what room is left.
- Text: ids become text through ``serve.chat.TextStream`` (whole UTF-8 characters, stop ids left
  out, and special tokens too: vLLM's default ``skip_special_tokens``, ``serve.chat.special_tokens``;
  with ``tools`` on, a chat reply keeps the tool-call markers its calls are read from). A stop
  string ends the reply before it (the sampler stops the row on the device when its bytes appear);
  streamed text holds back any tail that could still become a stop string, so a stream never sends
  text the final reply would not contain: the streamed pieces join to exactly the non-streamed text.
- ``logprobs``: the log-probability of each returned token under the model (temperature 1, no
  filtering: the sampler's ``logprobs``, vLLM's ``raw_logprobs``; chat leaves the end of turn out), with its
  ``top_logprobs`` most likely alternatives (chat: ``top_logprobs`` 0-20 beside ``logprobs: true``;
  completions: ``logprobs`` 0-20, OpenAI's legacy count, as vLLM caps it) from the sampler's
  ``top_logprobs`` arrays. The tokens listed are those that make the returned text: completions list
  every sampled token, the stop token included, each with its share of the text as ``tokens`` (a
  character split over tokens is the last one's; the stop token's and a special token's is ''), so
  the tokens join to the text and ``text_offset`` points into it; chat lists the same but the end of
  turn, a special token named in ``token`` with ``bytes: null``. When a stop string cuts the text,
  the list ends with the token the cut falls in, written as its part before the stop string, and
  the tokens sampled after it (the stop string's) are left out: no listed token reaches past the
  text (vLLM lists them; its text and tokens then disagree). Their count is ``completion_tokens``
  unless a stop string cut the text.
- ``tools`` (chat): OpenAI's function schemas go to the chat template (an imported model's template
  renders them its own way; lmforge's format lists them in the system turn,
  ``lmforge.data.chat.tools_system_prompt``), as do earlier turns' ``tool_calls`` and ``tool``
  results. A reply holding calls (``lmforge.infer.tools.parse_tool_calls``: lmforge's
  ``<|tool_call|>`` or Hermes' ``<tool_call>``) comes back as ``message.tool_calls`` (ids
  ``call_...``, arguments as a JSON string), the text before the first call as ``content`` (null when
  none), ``finish_reason: "tool_calls"``; ``parallel_tool_calls: false`` keeps the first call. A
  reply whose call is not valid JSON comes back as plain content, as vLLM's parsers do.
  ``tool_choice``: ``"auto"`` (the default with tools) or ``"none"`` (tools are not shown and no
  call is read); ``"required"`` or a named function would need constrained decoding and is refused.
- ``echo`` (completions): the prompt comes back before the completion, and with ``logprobs`` each
  prompt token's log-prob (the first's ``null``: nothing comes before it) and alternatives, by a
  teacher-forced pass (``lmforge.eval.scoring.Scorer.prompt_logprobs``). That is the request
  lm-evaluation-harness's ``local-completions`` model sends for ``loglikelihood`` tasks
  (``echo: true, logprobs: 1, max_tokens: 1``), whose greedy check compares a token's log-prob with
  the best alternative's: both come from one log-softmax, so they are equal exactly when it is the
  argmax.
- ``completion_tokens`` counts every sampled token, the stop token included (vLLM's count).
- A streaming client that disconnects cancels its rows; when every request in a sampler call is
  gone the call stops at the next step.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Sequence

import numpy as np

from lmforge.data.chat import TOOL_CALL, ChatFormat
from lmforge.infer import SamplingConfig
from lmforge.infer.tools import HERMES_CALL, HERMES_END, parse_tool_calls
from lmforge.serve.chat import ChatModel, TextStream, special_tokens
from lmforge.serve.engine import Engine, Job, RowResult
from lmforge.serve.requests import (BadRequest, ChatCompletionRequest, CompletionRequest, _refuse_unsupported,
                                    _validation_message, error_body)

try:   # the ``serve`` extra; a clear line when it is missing (checked again by ``create_app``)
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as _e:   # pragma: no cover - exercised only without the extra
    _MISSING = _e
else:
    _MISSING = None


COMPLETIONS_MAX_TOKENS = 16   # /v1/completions' max_tokens when none is given (OpenAI's default, and vLLM's)


# -------------------------------------------------------------------------------------- the app
def _shares(tok, tokens: Sequence[int], skip: Sequence[int], text: str) -> tuple[list[str], bool]:
    """Each token's share of ``text``, a reply's text as ``RowText`` made it from ``tokens``: what
    ``TextStream`` gives the token (a character split over tokens is the last one's, a ``skip`` id's is
    ''; the flush goes to the last). Returns ``(shares, cut)``: when a stop string cut ``text``, the
    list ends with the token the cut falls in, its share trimmed to the cut (``cut`` True), so the
    shares join to ``text`` and none reaches past it; otherwise one share per token."""
    stream = TextStream(tok, skip=skip)
    shares = [stream.push(t) for t in tokens]
    if shares:
        shares[-1] += stream.flush()
    if sum(map(len, shares)) <= len(text):
        return shares, False
    out, at = [], 0
    for share in shares:
        if at >= len(text):
            break
        out.append(share[:len(text) - at])
        at += len(share)
    return out, True


def create_app(model: ChatModel, *, model_name: str | None = None, max_batch: int = 16,
               batch_wait_ms: float = 5.0, default_max_tokens: int = 256) -> FastAPI:
    """The FastAPI application serving ``model`` (see the module docstring); its engine thread starts
    now and stops when the app shuts down (``app.state.engine``). ``default_max_tokens``: a chat
    reply's limit when the request gives none (text completions default to OpenAI's 16).

    Raises:
      ImportError naming the ``serve`` extra when FastAPI is not installed; ValueError for
      ``max_batch`` or ``default_max_tokens`` < 1.
    """
    if _MISSING is not None:
        raise ImportError(f"lmforge serve needs FastAPI and uvicorn: pip install 'lmforge[serve]' ({_MISSING})")
    if default_max_tokens < 1:
        raise ValueError(f"default_max_tokens={default_max_tokens}: expected >= 1")
    name = model_name or model.source.name
    sampler, template = model.sampler, model.template
    tok, context = sampler.tok, sampler.model_cfg.max_seq_len
    eos = (tok.eos_id,) if tok.eos_id >= 0 else ()
    chat_stops = tuple(dict.fromkeys([*template.stop_ids, *eos]))
    specials = special_tokens(tok)   # {id: text}: left out of returned text, named in logprobs
    call_markers = {TOOL_CALL, HERMES_CALL, HERMES_END}   # kept in the text when tools are on: calls are read from it
    plain_content = isinstance(template, ChatFormat)
    created = int(time.time())
    engine = Engine(model, max_batch=max_batch, batch_wait_ms=batch_wait_ms)

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        yield
        engine.close()

    app = FastAPI(title="lmforge", lifespan=lifespan)
    app.state.engine = engine

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        message, param = _validation_message(exc)
        return JSONResponse(error_body(message, param=param), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):   # unknown paths, wrong methods
        message = f"{request.method} {request.url.path}: {exc.detail}"
        if exc.status_code == 404:
            message += "; this server answers /v1/chat/completions, /v1/completions, /v1/models and /health"
        return JSONResponse(error_body(message), status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(BadRequest)
    async def _bad(request: Request, exc: BadRequest):
        return JSONResponse(error_body(exc.message, kind=exc.kind, param=exc.param, code=exc.code),
                            status_code=exc.status)

    table = tok.token_bytes()

    def alternatives(pairs) -> list[tuple[str, bytes, float]]:
        """(text, bytes, log-prob) of each (id, log-prob) alternative, best first."""
        return [(table[t].decode("utf-8", errors="replace"), table[t], lp) for t, lp in pairs]

    def check_model(body) -> None:
        if body.model != name:
            raise BadRequest(f"model: {body.model!r} is not served here; this server serves {name!r}",
                             param="model", status=404, code="model_not_found")

    def refuse_markers(messages: list[dict], tools: list[dict]) -> None:
        """For a template that renders text and tokenizes it whole (an imported model's), special-token text in
        a content, a call or a tool schema would become the special: refused, naming where (lmforge's format
        keeps it text instead: ``ChatFormat``'s ``plain_content``)."""
        if not specials or getattr(tok, "config", {}).get("split_special_tokens"):
            return
        places = [(f"messages.{i}.content", m["content"]) for i, m in enumerate(messages)]
        places += [(f"messages.{i}.tool_calls", json.dumps(m["tool_calls"], ensure_ascii=False))
                   for i, m in enumerate(messages) if m.get("tool_calls")]
        places += [("tools", json.dumps(tools, ensure_ascii=False))] if tools else []
        for where, text in places:
            found = min((t for t in specials.values() if t in text), key=text.find, default=None)
            if found is not None:
                raise BadRequest(f"{where}: holds {found!r}, a special token of this model's chat template, which "
                                 f"would read as a real one (a forged turn); remove it", param=where)

    def sampling_for(body, prompts: list[list[int]], limit: int | None, stop_ids, *, default_limit: int,
                     top_logprobs: int = 0, limit_field: str = "max_tokens",
                     prompt_field: str = "messages") -> SamplingConfig:
        """The call's settings; BadRequest naming ``prompt_field`` when the prompt alone fills the context,
        ``limit_field`` when the prompt and ``limit`` together pass it, ``n`` past ``max_batch``."""
        longest = max(map(len, prompts))
        room = context - longest
        if room < 1:
            asked = f"; {limit_field} asks for {limit} more" if limit is not None else ""
            raise BadRequest(f"this model's maximum context length is {context} tokens and the prompt takes "
                             f"{longest}{asked}: no room to reply", param=prompt_field, code="context_length_exceeded")
        if limit is not None and limit > room:
            raise BadRequest(f"this model's maximum context length is {context} tokens; the prompt takes {longest} "
                             f"and {limit_field} asks for {limit} more ({longest + limit} in all)", param=limit_field,
                             code="context_length_exceeded")
        rows = len(prompts) * body.n
        if rows > engine.max_batch:
            raise BadRequest(f"n: {len(prompts)} prompt(s) x n={body.n} = {rows} rows; this server samples at most "
                             f"{engine.max_batch} in one request (lmforge serve --max-batch)", param="n")
        return SamplingConfig(max_new_tokens=limit if limit is not None else min(default_limit, room),
                              temperature=body.temperature, top_p=body.top_p, top_k=max(body.top_k, 0), n=body.n,
                              stop_token_ids=stop_ids, stop_strings=body.stop_strings(), top_logprobs=top_logprobs)

    async def run(job_args: dict, stream: bool):
        """Submits a job; returns the row results, or (streaming) an async iterator of events."""
        loop = asyncio.get_running_loop()
        if not stream:
            done = loop.create_future()
            job = Job(**job_args, on_done=lambda res: loop.call_soon_threadsafe(_settle, done, res))
            engine.submit(job)
            result = await done
            if isinstance(result, Exception):
                raise BadRequest(f"the sampler failed: {type(result).__name__}: {result}", status=500,
                                 kind="server_error")
            return result
        events: asyncio.Queue = asyncio.Queue()
        put = lambda item: loop.call_soon_threadsafe(events.put_nowait, item)
        job = Job(**job_args, on_done=lambda res: put(("done", res)), on_piece=lambda r, text: put(("piece", (r, text))))
        engine.submit(job)
        return job, events

    def usage(rows: list[RowResult], prompts: list[list[int]]) -> dict:
        p = sum(map(len, prompts))
        c = sum(len(r.tokens) for r in rows)
        return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}

    def sse(obj) -> str:
        return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"

    async def streamed(job: Job, events: asyncio.Queue, prompts, chunk: Callable[[int, str | None, str | None], dict],
                       include_usage: bool, first: Callable[[int], dict] | None, usage_chunk: Callable[[dict], dict]):
        try:
            if first is not None:
                for r in range(job.rows):
                    yield sse(first(r))
            while True:
                kind, value = await events.get()
                if kind == "piece":
                    r, text = value
                    yield sse(chunk(r, text, None))
                    continue
                if isinstance(value, Exception):
                    yield sse(error_body(f"the sampler failed: {type(value).__name__}: {value}", kind="server_error"))
                    break
                for r, row in enumerate(value):
                    yield sse(chunk(r, None, row.finish_reason))
                if include_usage:
                    yield sse(usage_chunk(usage(value, prompts)))
                break
            yield "data: [DONE]\n\n"
        finally:   # the client went away (or we are done): its rows need no more steps
            job.cancelled.set()

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": name, "sampler_calls": len(engine.batches)}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": created, "owned_by": "lmforge",
                                            "max_model_len": context}]}

    @app.get("/v1/models/{model_id:path}")
    async def model_card(model_id: str):
        if model_id != name:
            raise BadRequest(f"model: {model_id!r} is not served here; this server serves {name!r}", param="model",
                             status=404, code="model_not_found")
        return (await models())["data"][0]

    def completion_prompts(prompt) -> list[list[int]]:
        """``prompt`` as id lists: text is encoded (BOS first, as ``lmforge sample``); ids are taken as they are."""
        if isinstance(prompt, str):
            return [sampler.encode_prompt(prompt)]
        if not prompt:
            raise BadRequest("prompt: expected a string, a list of strings, a list of token ids or a list of such "
                             "lists; got an empty list", param="prompt")
        if isinstance(prompt[0], int):
            prompt = [prompt]
        out = []
        for i, p in enumerate(prompt):
            if isinstance(p, str):
                out.append(sampler.encode_prompt(p))
                continue
            bad = [t for t in p if not 0 <= t < tok.vocab_size]
            if not p or bad:
                raise BadRequest(f"prompt.{i}: expected token ids in [0, {tok.vocab_size}), "
                                 f"{'got ' + str(bad[:5]) if bad else 'got none'}", param="prompt")
            out.append(list(p))
        return out

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest):
        check_model(body)
        _refuse_unsupported(body)
        messages = [m.for_template(i) for i, m in enumerate(body.messages)]
        tools = [t.model_dump(exclude_none=True) for t in body.tools or ()] if body.tool_choice != "none" else []
        if not plain_content:
            refuse_markers(messages, tools)
        try:
            ids = [int(i) for i in template.prompt(messages, tools=tools or None)]
        except ValueError as e:
            raise BadRequest(f"messages: {e}", param="messages") from None
        hide = tuple(i for i, t in specials.items() if not (tools and t in call_markers))
        if body.max_tokens is not None and body.max_completion_tokens is not None \
                and body.max_tokens != body.max_completion_tokens:
            raise BadRequest("max_tokens and max_completion_tokens disagree; give one", param="max_completion_tokens")
        limit = body.max_completion_tokens or body.max_tokens
        prompts = [ids]
        cfg = sampling_for(body, prompts, limit, chat_stops, default_limit=default_max_tokens,
                           top_logprobs=(body.top_logprobs or 0) if body.logprobs else 0,
                           limit_field="max_completion_tokens" if body.max_completion_tokens else "max_tokens")
        rid, when = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        job_args = dict(prompts=prompts, sampling=cfg, stop_ids=chat_stops, seed=body.seed, hide=hide)

        def logprobs_of(row: RowResult):
            """One entry per token that makes the text (module docstring): the end of turn left out, a
            special token named with ``bytes: null``, the token a stop string cut as its part before it."""
            if not body.logprobs:
                return None
            shares, cut = _shares(tok, row.tokens, (*chat_stops, *hide), row.text)
            content = []
            for i, (t, share) in enumerate(zip(row.tokens, shares)):
                if t in chat_stops or not 0 <= t < len(table):
                    continue
                if t in hide:
                    text, raw = specials[t], None
                elif cut and i == len(shares) - 1:
                    text, raw = share, list(share.encode())
                else:
                    text, raw = table[t].decode("utf-8", errors="replace"), list(table[t])
                content.append({"token": text, "logprob": row.logprobs[i], "bytes": raw,
                                "top_logprobs": [{"token": a, "logprob": lp, "bytes": list(b)}
                                                 for a, b, lp in alternatives(row.top[i] if row.top else [])]})
            return {"content": content}

        def message_of(row: RowResult) -> tuple[dict, str]:
            """The reply as a message, and its finish reason: with tools, the calls it holds."""
            calls = []
            if tools:
                try:
                    calls = parse_tool_calls(row.text)
                except ValueError:   # not a well-formed call: the reply is plain text
                    calls = []
            if not calls:
                return {"role": "assistant", "content": row.text}, row.finish_reason
            if body.parallel_tool_calls is False:
                calls = calls[:1]
            head = row.text[:min(i for i in (row.text.find(TOOL_CALL), row.text.find(HERMES_CALL)) if i >= 0)]
            return {"role": "assistant", "content": head.strip() or None,
                    "tool_calls": [{"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                                    "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)}}
                                   for c in calls]}, "tool_calls"

        if not body.stream:
            rows = await run(job_args, stream=False)
            choices = []
            for r, row in enumerate(rows):
                message, finish = message_of(row)
                choices.append({"index": r, "message": message, "logprobs": logprobs_of(row), "finish_reason": finish})
            return {"id": rid, "object": "chat.completion", "created": when, "model": name, "system_fingerprint": None,
                    "choices": choices, "usage": usage(rows, prompts)}
        job, events = await run(job_args, stream=True)
        base = {"id": rid, "object": "chat.completion.chunk", "created": when, "model": name, "system_fingerprint": None}
        include = bool(body.stream_options and body.stream_options.include_usage)
        if include:   # OpenAI: every chunk but the last carries "usage": null
            base["usage"] = None

        def chunk(r, text, finish):
            delta = {"content": text} if text is not None else {}
            return {**base, "choices": [{"index": r, "delta": delta, "logprobs": None, "finish_reason": finish}]}

        return StreamingResponse(streamed(
            job, events, prompts, chunk, include,
            first=lambda r: {**base, "choices": [{"index": r, "delta": {"role": "assistant", "content": ""},
                                                  "logprobs": None, "finish_reason": None}]},
            usage_chunk=lambda u: {**base, "choices": [], "usage": u}), media_type="text/event-stream")

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest):
        check_model(body)
        _refuse_unsupported(body)
        prompts = completion_prompts(body.prompt)
        if body.echo and sampler.model_cfg.architecture != "decoder":
            raise BadRequest(f"echo: the prompt's log-probs need a decoder-only model; this one is "
                             f"{sampler.model_cfg.architecture.replace('_', '-')}", param="echo")
        cfg = sampling_for(body, prompts, body.max_tokens, eos, default_limit=COMPLETIONS_MAX_TOKENS,
                           top_logprobs=body.logprobs or 0, prompt_field="prompt")
        rid, when = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        hide = tuple(specials)
        job_args = dict(prompts=prompts, sampling=cfg, stop_ids=eos, seed=body.seed, echo=body.echo, hide=hide)
        sent = [body.prompt] if isinstance(body.prompt, str) else (
            body.prompt if body.prompt and isinstance(body.prompt[0], str) else None)   # prompt texts as sent

        def echoed_text(r: int) -> str:
            return sent[r] if sent is not None else tok.decode(prompts[r])

        def logprobs_of(r: int, row: RowResult):
            if body.logprobs is None:
                return None
            # (id, its log-prob or None, its alternatives or None) for each token shown: the prompt's with
            # echo (the first has nothing before it), then the sampled ones that make the text
            shown, texts = [], []
            if row.prompt is not None:
                ids = prompts[r // body.n]
                shown.append((ids[0], None, None))
                shown += [(t, float(lp), list(zip(a.tolist(), b.tolist())))
                          for t, lp, a, b in zip(ids[1:], row.prompt.logprobs, row.prompt.top_ids, row.prompt.top_logprobs)]
                stream = TextStream(tok, skip=eos)   # the prompt as sent: its specials are its text
                texts = [stream.push(t) for t in ids]
                texts[-1] += stream.flush()
            # each token's share of the text (module docstring): every sampled token up to the end of the text,
            # so without a stop string the list ends with the one max_tokens asked for, as the harness reads it
            shares, _ = _shares(tok, row.tokens, (*eos, *hide), row.text)
            shown += [(t, row.logprobs[i], row.top[i] if row.top else [])
                      for i, t in enumerate(row.tokens[:len(shares)])]
            texts += shares
            offsets = np.cumsum([0] + [len(t) for t in texts])[:-1].tolist()
            return {"tokens": texts, "token_logprobs": [lp for _, lp, _ in shown],
                    "top_logprobs": [None if alt is None else {t: lp for t, _, lp in alternatives(alt)}
                                     for _, _, alt in shown],
                    "text_offset": offsets}

        if not body.stream:
            rows = await run(job_args, stream=False)
            return {"id": rid, "object": "text_completion", "created": when, "model": name, "system_fingerprint": None,
                    "choices": [{"index": r, "text": (echoed_text(r // body.n) if body.echo else "") + row.text,
                                 "logprobs": logprobs_of(r, row), "finish_reason": row.finish_reason}
                                for r, row in enumerate(rows)],
                    "usage": usage(rows, prompts)}
        job, events = await run(job_args, stream=True)
        base = {"id": rid, "object": "text_completion", "created": when, "model": name, "system_fingerprint": None}
        include = bool(body.stream_options and body.stream_options.include_usage)
        if include:   # OpenAI: every chunk but the last carries "usage": null
            base["usage"] = None

        def chunk(r, text, finish):
            return {**base, "choices": [{"index": r, "text": text or "", "logprobs": None, "finish_reason": finish}]}

        return StreamingResponse(streamed(job, events, prompts, chunk, include,
                                          first=None, usage_chunk=lambda u: {**base, "choices": [], "usage": u}),
                                 media_type="text/event-stream")

    return app


def _settle(future: asyncio.Future, result) -> None:
    if not future.done():
        future.set_result(result)


def run_server(model: ChatModel, *, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info", **app_kw) -> None:
    """Runs the server until interrupted (uvicorn; Ctrl-C or SIGTERM stop it)."""
    import uvicorn   # pylint: disable=import-outside-toplevel

    app = create_app(model, **app_kw)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
