"""Tool use: the assistant calls a tool (a calculator, Python, a search over passages) in the middle
of its turn, reads what it returned and goes on — the loop of Toolformer (Schick et al. 2023,
arXiv:2302.04761) and of the chat APIs' function calling, over lmforge's chat format.

The format (``lmforge.data.chat.ChatFormat``; ``<|tool_call|>`` and ``<|tool_result|>`` come with
every lmforge tokenizer)::

    <|user|> What is 37*91? <|end|>
    <|assistant|> <|tool_call|>{"name": "calculator", "arguments": {"expression": "37*91"}} <|end|>
    <|tool_result|> 3367 <|end|>
    <|assistant|> 3367 <|end|>

- A call is an assistant turn holding ``<|tool_call|>`` and then one JSON object ``{"name": ...,
  "arguments": {...}}`` (the OpenAI function-call shape: a name and keyword arguments; arguments
  given as a JSON string are read too). Text before the marker stays (a model may think aloud
  first); text after the object is ignored. A turn may hold several calls, each after its own
  marker (:func:`parse_tool_calls`; OpenAI's parallel function calling): they run in order and
  each result is a message of its own. What the tool returned is the next message, role
  ``tool``, and the assistant speaks again. As messages::

      {"role": "assistant", "content": '<|tool_call|>{"name": "calculator", ...}'}
      {"role": "tool", "content": "3367"}

  so SFT on such conversations (loss on assistant turns, the default) trains the calls and never
  the results. ``format_call`` (``lmforge.data.chat``, re-exported here) writes a call. Models imported with a Hermes / Qwen style
  template write ``<tool_call>{...}</tool_call>``; :func:`parse_tool_call` reads that too.
- :func:`run_tools` is the loop. ``reply(conversations) -> replies`` is any plain callable (over a
  sampler: :func:`lmforge.infer.chat_replies`; in a test, a script); it is asked for every
  unfinished conversation at once, the calls are run, their results appended, and again, until
  each conversation has a reply without a call or has made ``max_calls`` calls.
- A call that cannot run — not JSON, an unknown tool, wrong arguments, a tool that raises —
  returns ``"error: ..."`` as the tool's result, as function-calling APIs do, so the model sees
  what went wrong; :class:`ToolRun` counts these. Nothing the model writes makes the loop raise.

Tools: :func:`calculator` (arithmetic by ``simpleeval``, a maintained safe evaluator: Python's
``eval`` is not safe on model output and a parser of our own would be one more to maintain),
:func:`python` (a fresh interpreter process with a time, memory and output limit, nanochat's
recipe; it is not a security sandbox) and ``lmforge.infer.retrieval.search_tool`` (BM25 over
passages, also the retriever of RAG).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import json
import math
import operator
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence

from lmforge.data.chat import TOOL_CALL, call_arguments, format_call, tools_system_prompt

HERMES_CALL, HERMES_END = "<tool_call>", "</tool_call>"
FINISHES = ("reply", "max_calls")

Reply = Callable[..., list[str]]   # conversations (, tools=per-conversation schemas) -> one assistant reply each


class ToolError(Exception):
    """A tool's failure, said in words for the model: :func:`call_tool` returns ``"error: <message>"``
    (any other exception: ``"error: <type>: <message>"``)."""


@dataclasses.dataclass(frozen=True)
class Tool:
    """A function the model may call: ``fn(**arguments) -> str``.

    ``parameters`` maps each argument name to its description (every argument is a string, the
    shape small models learn: :func:`call_tool` passes other JSON values as their JSON text and leaves
    nulls out); those with a default in ``fn`` are optional. :meth:`schema` is the OpenAI ``tools``
    entry. Raises ValueError for an empty name or ``parameters`` that is not a mapping of names to
    descriptions."""
    name: str
    fn: Callable[..., str]
    description: str
    parameters: Mapping[str, str]

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"Tool: name {self.name!r}: expected a non-empty string")
        if not isinstance(self.parameters, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.parameters.items()):
            raise ValueError(f"Tool {self.name!r}: parameters {self.parameters!r}: expected a mapping of argument "
                             f"names to descriptions")

    def __call__(self, **arguments) -> str:
        return self.fn(**arguments)

    @property
    def required(self) -> list[str]:
        """The parameters ``fn`` has no default for."""
        try:
            sig = inspect.signature(self.fn).parameters
        except (TypeError, ValueError):   # a builtin without a signature: all required
            return list(self.parameters)
        return [p for p in self.parameters if p not in sig or sig[p].default is inspect.Parameter.empty]

    def schema(self) -> dict:
        """``{"type": "function", "function": {"name", "description", "parameters": JSON schema}}``."""
        props = {k: {"type": "string", "description": v} for k, v in self.parameters.items()}
        return {"type": "function", "function": {
            "name": self.name, "description": self.description,
            "parameters": {"type": "object", "properties": props, "required": self.required}}}


@dataclasses.dataclass(frozen=True)
class ToolCall:
    """One call as the model wrote it, and what came back (``error``: the result is an error)."""
    name: str
    arguments: dict
    result: str = ""
    error: bool = False


@dataclasses.dataclass
class ToolRun:
    """A conversation taken through :func:`run_tools`.

    ``messages``: the conversation given, then every call, result and the last reply, as
    messages; ``reply``: the last assistant reply (without a call when ``finish == "reply"``);
    ``calls``: in order; ``finish``: ``"reply"`` or ``"max_calls"`` (it was still calling)."""
    messages: list[dict]
    reply: str
    calls: list[ToolCall]
    finish: str

    @property
    def errors(self) -> int:
        return sum(c.error for c in self.calls)


def parse_tool_call(reply: str) -> ToolCall | None:
    """The first call in an assistant reply, or None when it holds no call marker.

    Reads ``<|tool_call|>{json}`` and ``<tool_call>{json}</tool_call>``; the object is ``{"name":
    str, "arguments": object or a JSON string of one}`` (``"parameters"`` for ``"arguments"``, as
    Llama 3.1 writes them, is read too). Later calls are not read (:func:`parse_tool_calls` reads
    them all). Raises ValueError, saying what was expected, for a marker followed by anything else."""
    at = [(reply.find(m), m) for m in (TOOL_CALL, HERMES_CALL) if m in reply]
    if not at:
        return None
    start, marker = min(at)
    return _read_call(reply[start + len(marker):], marker)[0]


def parse_tool_calls(reply: str) -> list[ToolCall]:
    """Every call in an assistant reply, in order (``[]`` without a marker): each marker followed by
    one call object as :func:`parse_tool_call` reads it — several calls in one turn, as OpenAI's
    parallel function calling and Hermes / Qwen templates write them. Raises ValueError for a marker
    followed by anything but a call (as :func:`parse_tool_call`; "call k: ..." for a later one)."""
    calls, pos = [], 0
    while True:
        at = [(reply.find(m, pos), m) for m in (TOOL_CALL, HERMES_CALL) if reply.find(m, pos) >= 0]
        if not at:
            return calls
        start, marker = min(at)
        try:
            call, used = _read_call(reply[start + len(marker):], marker)
        except ValueError as e:
            if not calls:
                raise
            raise ValueError(f"call {len(calls)}: {e}") from None
        calls.append(call)
        pos = start + len(marker) + used


def read_calls(reply: str) -> list[ToolCall]:
    """:func:`parse_tool_calls` for a loop that runs them: never raises. A reply whose calls cannot be
    read gives one call with ``error=True`` and ``"error: ..."`` as its result, for the model to read
    (what :func:`run_tools` and ``lmforge chat --tools`` feed back)."""
    try:
        return parse_tool_calls(reply)
    except ValueError as e:
        return [ToolCall("", {}, f"error: {e}", error=True)]


def _read_call(body: str, marker: str) -> tuple[ToolCall, int]:
    """The call object at the start of ``body`` (after its marker) and the characters it took (with a
    Hermes call's closing tag)."""
    lead = len(body) - len(body.lstrip())
    try:
        obj, end = json.JSONDecoder().raw_decode(body, lead)
    except json.JSONDecodeError as e:
        raise ValueError(f"the call is not JSON ({e.msg} at character {e.pos}); expected "
                         f'{{"name": "<tool>", "arguments": {{...}}}}') from None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        raise ValueError(f'the call {_short(obj)} has no "name"; expected {{"name": "<tool>", "arguments": {{...}}}}')
    # "parameters": Llama 3.1's JSON tool calls
    args = call_arguments(obj.get("arguments", obj.get("parameters", {})), f"the call to {obj['name']!r}")
    if marker == HERMES_CALL and body[end:].lstrip().startswith(HERMES_END):
        end = len(body) - len(body[end:].lstrip()) + len(HERMES_END)
    return ToolCall(obj["name"], args), end


def call_tool(call: ToolCall, tools: Mapping[str, Tool]) -> ToolCall:
    """``call`` with its result: the tool's return value, or ``"error: ..."`` (unknown tool,
    arguments that are not the tool's, the tool raising). Never raises.

    Arguments reach the tool as :class:`Tool` declares them, strings (its schema's ``"type": "string"``;
    the builtin calculator, python and search tools read text): a string as written, a number, boolean,
    list or object as its JSON text (``true``, ``{"metric": true}``), and a null one left out, so the
    tool's default applies (a required one left out is the "takes ..." error), as OpenAI's function calling
    treats an optional argument given as null."""
    tool = tools.get(call.name)
    if tool is None:
        return dataclasses.replace(call, result=f"error: no tool named {call.name!r}; the tools are "
                                                f"{', '.join(sorted(tools)) or 'none'}", error=True)
    arguments = {k: v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
                 for k, v in call.arguments.items() if v is not None}
    if set(arguments) - set(tool.parameters) or set(tool.required) - set(arguments):
        optional = [p for p in tool.parameters if p not in tool.required]
        takes = ", ".join(tool.required) + (f" (optional: {', '.join(optional)})" if optional else "")
        nulls = [k for k, v in call.arguments.items() if v is None]
        got = ", ".join(arguments) or "no arguments"
        got += f" ({', '.join(nulls)} null, left out)" if nulls else ""
        return dataclasses.replace(call, result=f"error: {call.name} takes {takes or 'no arguments'}; got {got}",
                                   error=True)
    try:
        return dataclasses.replace(call, result=str(tool(**arguments)))
    except ToolError as e:
        return dataclasses.replace(call, result=f"error: {e}", error=True)
    except Exception as e:   # pylint: disable=broad-except  (any failure is the model's to read)
        return dataclasses.replace(call, result=f"error: {type(e).__name__}: {e}", error=True)


def run_tools(reply: Reply, conversations: Sequence[Sequence[Mapping[str, str]]], tools: Sequence[Tool] | Mapping[str, Tool],
              *, max_calls: int = 4, tool_schemas: Sequence[Sequence[Mapping] | None] | None = None) -> list[ToolRun]:
    """Each conversation's next assistant turn, with tool calls run in between (see the module docstring).

    ``reply(conversations)`` returns one reply per conversation given (round k asks only for the
    conversations still calling). With ``tool_schemas`` (per conversation, the function schemas its
    prompt shows: a chat file's ``tools`` column) it is called ``reply(conversations, tools=...)`` with
    those of the conversations asked (``lmforge.infer.text.replier`` takes them). A reply with several
    calls runs each, in order, and appends one ``tool`` message per call. At most ``max_calls`` calls per
    conversation: a reply whose calls would pass them ends the run with ``finish="max_calls"``, its last
    reply being those calls, not run (drop such runs before training on their ``messages``: SFT would
    teach them). ``reply`` gets copies of the conversations. Raises ValueError for ``max_calls < 1``, two tools of one name, or a ``reply``
    returning the wrong number of replies."""
    if max_calls < 1:
        raise ValueError(f"run_tools: max_calls must be >= 1; got {max_calls}")
    if tool_schemas is not None and len(tool_schemas) != len(conversations):
        raise ValueError(f"run_tools: {len(tool_schemas)} tool schema lists for {len(conversations)} conversations")
    if not isinstance(tools, Mapping):
        names = [t.name for t in tools]
        if len(set(names)) != len(names):
            raise ValueError(f"run_tools: two tools share a name in {names}")
        tools = {t.name: t for t in tools}
    runs = [ToolRun([dict(m) for m in c], "", [], "reply") for c in conversations]
    active = list(range(len(runs)))
    while active:
        asked = [[dict(m) for m in runs[i].messages] for i in active]
        replies = (reply(asked) if tool_schemas is None else reply(asked, tools=[tool_schemas[i] for i in active]))
        if len(replies) != len(active):
            raise ValueError(f"run_tools: reply() returned {len(replies)} replies for {len(active)} conversations "
                             f"(sample one reply per conversation: n=1)")
        still = []
        for i, text in zip(active, replies):
            run = runs[i]
            run.messages.append({"role": "assistant", "content": text})
            run.reply = text
            calls = read_calls(text)
            if not calls:
                continue
            if len(run.calls) + len(calls) > max_calls:   # calls past the limit: not run
                run.finish = "max_calls"
                continue
            for call in calls:
                call = call if call.error else call_tool(call, tools)
                run.calls.append(call)
                run.messages.append({"role": "tool", "content": call.result})
            still.append(i)
        active = still
    return runs


# ----------------------------------------------------------------------------------------- tools
def _number(x) -> str:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise ToolError(f"the expression gives {type(x).__name__} {x!r}; expected a number")
    if isinstance(x, float):
        if not math.isfinite(x):
            raise ToolError(f"the result is {x}")
        if x.is_integer() and abs(x) < 1e15:
            return str(int(x))
        return f"{x:.12g}"
    return str(x)


def _power(a, b):
    if abs(b) > 64 or (isinstance(a, int) and isinstance(b, int) and abs(a) > 1 and abs(b) * math.log2(abs(a)) > 256):
        raise ToolError(f"{a} ** {b} is too large for the calculator (results up to 2**256)")
    return a ** b


def calculator() -> Tool:
    """``calculator(expression)``: arithmetic on numbers (``+ - * / // % **``, parentheses) and
    ``sqrt log exp sin cos tan abs round min max``, ``pi`` and ``e``, evaluated by ``simpleeval``.
    Integers stay exact; floats are shown to 12 significant digits (a whole float as an integer).
    Errors (a name it does not know, division by zero, a power past 2**256) are raised and
    :func:`call_tool` turns them into ``"error: ..."``."""
    from simpleeval import SimpleEval   # pylint: disable=import-outside-toplevel

    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: _power,
           ast.USub: operator.neg, ast.UAdd: operator.pos}
    funcs = {"sqrt": math.sqrt, "log": math.log, "exp": math.exp, "sin": math.sin, "cos": math.cos,
             "tan": math.tan, "abs": abs, "round": round, "min": min, "max": max}
    evaluator = SimpleEval(operators=ops, functions=funcs, names={"pi": math.pi, "e": math.e})

    def calculate(expression: str) -> str:
        text = expression.strip().replace("^", "**").replace("×", "*").replace("÷", "/")
        if not text:
            raise ToolError("empty expression")
        try:
            return _number(evaluator.eval(text))
        except SyntaxError:
            raise ToolError(f"{expression!r} is not an arithmetic expression") from None
        except KeyError as e:   # simpleeval's lookup of an operator it was not given
            raise ToolError(f"{expression!r}: the operator {getattr(e.args[0], '__name__', e.args[0])} is not "
                            f"supported (+ - * / // % ** only)") from None
        except OverflowError:
            raise ToolError(f"{expression!r} overflows") from None

    return Tool("calculator", calculate, "Evaluates an arithmetic expression, e.g. (37*91 + 4) / 3",
                {"expression": "the expression, in Python syntax"})


_PYTHON_MAIN = r"""
import ast, sys
try:
    import resource
    memory, cpu, fsize = (int(x) for x in sys.argv[1:4])
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
except ImportError:   # not POSIX: the wall-clock timeout alone
    pass
source = sys.stdin.read()
tree = ast.parse(source, "<tool>")
last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
scope = {"__name__": "__main__"}
exec(compile(tree, "<tool>", "exec"), scope)
if last is not None:
    value = eval(compile(ast.Expression(last.value), "<tool>", "eval"), scope)
    if value is not None:
        print(repr(value))
"""


def python(*, timeout_s: float = 5.0, memory_mb: int = 1024, max_output: int = 2000) -> Tool:
    """``python(code)``: runs ``code`` in a fresh ``python -I`` process in an empty temporary
    folder and returns what it printed (stdout, then stderr, trailing whitespace dropped), cut to its last ``max_output``
    characters; a last line that is an expression is printed as a REPL would (``"37*91"`` →
    ``3367``). Limits (POSIX): ``timeout_s`` of wall time, the CPU time alike, ``memory_mb`` of
    address space, 16 MB of file writes. A failure comes back as ``error: <the exception line>``.

    This isolates mistakes, not attacks: the process runs as the caller's user with the network
    and the file system it can reach. Run untrusted models' code in a container."""

    # The limits are set by the child itself before it reads the code: a preexec_fn would fork the
    # caller's Python, unsafe in a multithreaded (JAX) process.
    limits = [str(memory_mb << 20), str(max(int(math.ceil(timeout_s)), 1)), str(16 << 20)]

    def run(code: str) -> str:
        with tempfile.TemporaryDirectory(prefix="lmforge-tool-") as cwd:
            proc = subprocess.Popen([sys.executable, "-I", "-c", _PYTHON_MAIN, *limits], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd,
                                    start_new_session=True,
                                    env={"PATH": os.environ.get("PATH", ""), "PYTHONHASHSEED": "0"})
            try:
                out, err = proc.communicate(code, timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)   # the code's own children too (a new session)
                proc.communicate()
                raise ToolError(f"the code ran past {timeout_s:g} s") from None
        if proc.returncode != 0:
            lines = err.strip().splitlines()
            last = lines[-1] if lines else f"exit status {proc.returncode}"
            if proc.returncode < 0:
                last = f"killed by signal {-proc.returncode} (a limit of time or memory)"
            raise ToolError((out[-max_output // 2:] + last)[-max_output:])
        return (out + err).rstrip()[-max_output:]

    return Tool("python", run, "Runs Python code and returns what it prints (the last expression is printed)",
                {"code": "the Python source"})


def tools_prompt(tools: Sequence[Tool]) -> str:
    """A system message that lists ``tools`` (their OpenAI schemas, one JSON line each) and says how to
    call one, for a model that was not fine-tuned on a fixed set of tools
    (``lmforge.data.chat.tools_system_prompt`` of their schemas)."""
    return tools_system_prompt([t.schema() for t in tools])


TOOLS: dict[str, Callable[[], Tool]] = {"calculator": calculator, "python": python}   # by name, for configs


def tools_by_name(names: Sequence[str]) -> list[Tool]:
    """The tools of ``TOOLS`` named (``search`` needs passages: build it with
    ``lmforge.infer.retrieval.search_tool``). Raises ValueError for a name not in ``TOOLS``."""
    unknown = [n for n in names if n not in TOOLS]
    if unknown:
        raise ValueError(f"tool {unknown[0]!r}: expected one of {', '.join(TOOLS)}")
    return [TOOLS[n]() for n in names]


def _short(x, n: int = 60) -> str:
    text = json.dumps(x, ensure_ascii=False) if not isinstance(x, str) else repr(x)
    return text if len(text) <= n else text[:n - 3] + "..."


__all__ = ["FINISHES", "HERMES_CALL", "TOOLS", "TOOL_CALL", "Tool", "ToolCall", "ToolError", "ToolRun", "calculator", "call_tool",
           "format_call", "parse_tool_call", "parse_tool_calls", "python", "read_calls", "run_tools", "tools_by_name", "tools_prompt"]
