"""Generation tasks: prompts -> greedy completions (the one sampler) -> extracted answers -> scores.

    items = load_gsm8k(SHARED / "gsm8k_test.jsonl")
    result = gsm8k(sampler, items, max_new_tokens=256)
    result["metrics"]["exact_match_flexible"]

- GSM8K (Cobbe et al. 2021, "Training Verifiers to Solve Math Word Problems"; the test split is
  1,319 grade-school word problems whose reference solutions end in ``#### N``). The prompt is
  lm-evaluation-harness's ``gsm8k`` format, ``"Question: {question}\\nAnswer:"``, after ``fewshot``
  solved training examples in the same format separated by a blank line; decoding is greedy and
  stops at ``"Question:"`` (the model starting the next problem) or EOS. Two scores, as the harness
  reports them: ``exact_match_strict`` reads only a ``#### N`` in the output,
  ``exact_match_flexible`` falls back to the last number (``extract.extract_number``).
- A local generation task file (``.jsonl``: ``{"prompt": str, "answer": str | [str, ...]}``,
  optionally ``"stop": [str, ...]``) is matched by ``exact``, ``numeric``, ``auto`` (numeric for an
  answer that is a number, else exact) or ``regex`` (with a pattern; its group 1 or whole match is
  compared exactly). An item is correct when any of its answers matches.

Prompts go to the sampler in chunks of ``batch`` (its shapes are bucketed, so every full chunk
compiles once); the completions come back as text cut at the first stop string. A prompt that fills
the model's context is cropped to its last ``max_seq_len // 2`` tokens (``infer.text``): stderr names
it by file:line, its sample says ``"cropped": true`` and the metrics count ``n_cropped`` (present
only when some prompt was cropped).
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
from collections.abc import Callable, Sequence

from lmforge.eval import extract
from lmforge.eval.jsonl import TaskFileError, field, read_jsonl
from lmforge.infer import SamplingConfig

MATCHES = ("auto", "exact", "numeric", "regex")
GSM8K_STOP = ("Question:",)


@dataclasses.dataclass(frozen=True)
class GenerationItem:
    prompt: str
    answers: tuple[str, ...]
    where: str                          # file:line
    stop: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class GSM8KItem:
    question: str
    solution: str                       # the reference solution, ending in "#### N"
    answer: str                         # N, normalised
    where: str


def load_gsm8k(path: str | pathlib.Path, *, limit: int | None = None) -> list[GSM8KItem]:
    """GSM8K's ``{"question", "answer"}`` lines; an answer without ``#### N`` is an error naming file:line."""
    items = []
    for number, obj in read_jsonl(path):
        if limit is not None and len(items) >= limit:
            break
        where = f"{path}:{number}"
        question, solution = field(obj, "question", str, where), field(obj, "answer", str, where)
        final = extract.gsm8k_final(solution)
        if final is None:
            raise TaskFileError(f"{where}: GSM8K answer has no final '#### N' line (got ...{solution[-40:]!r})")
        items.append(GSM8KItem(question, solution, final, where))
    if not items:
        raise TaskFileError(f"{path}: holds no GSM8K items")
    return items


def gsm8k_prompt(question: str, shots: Sequence[GSM8KItem] = ()) -> str:
    """lm-evaluation-harness's gsm8k format: ``Question: ...\\nAnswer: ...`` shots, a blank line apart."""
    solved = "".join(f"Question: {s.question}\nAnswer: {s.solution}\n\n" for s in shots)
    return f"{solved}Question: {question}\nAnswer:"


def load_generation(path: str | pathlib.Path, *, limit: int | None = None) -> list[GenerationItem]:
    """A local generation task file (module docstring); a malformed line is an error naming file:line."""
    items = []
    for number, obj in read_jsonl(path):
        if limit is not None and len(items) >= limit:
            break
        where = f"{path}:{number}"
        prompt = field(obj, "prompt", str, where)
        answer = field(obj, "answer", (str, list), where)
        answers = (answer,) if isinstance(answer, str) else tuple(answer)
        if not answers or not all(isinstance(a, str) for a in answers):
            raise TaskFileError(f"{where}: 'answer' must be a string or a non-empty list of strings")
        stop = obj.get("stop", [])
        if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
            raise TaskFileError(f"{where}: 'stop' must be a list of non-empty strings")
        items.append(GenerationItem(prompt, answers, where, tuple(stop)))
    if not items:
        raise TaskFileError(f"{path}: holds no items")
    return items


def completions(sampler, prompts: Sequence[str], *, max_new_tokens: int, stop: Sequence[str] = (), batch: int = 16,
                progress: bool = False, desc: str = "generating", wheres: Sequence[str] | None = None) -> list:
    """Greedy completions of ``prompts`` (``infer.Completion``: text cut at the first stop string, and
    whether the prompt was cropped to fit the context), ``batch`` prompts per call. ``wheres`` name the
    prompts in the sampler's line about cropped prompts (default: their index in ``prompts``)."""
    from tqdm.auto import tqdm   # pylint: disable=import-outside-toplevel

    cfg = SamplingConfig(max_new_tokens=max_new_tokens, temperature=0.0, stop_strings=tuple(stop))
    names = list(wheres) if wheres is not None else [str(i) for i in range(len(prompts))]
    out = []
    with tqdm(total=len(prompts), desc=desc, unit="prompt", disable=not progress, leave=False) as bar:
        for start in range(0, len(prompts), batch):
            chunk = list(prompts[start:start + batch])
            out += sampler.completions(chunk, cfg, labels=names[start:start + batch])
            bar.update(len(chunk))
    return out


def complete(sampler, prompts: Sequence[str], *, max_new_tokens: int, stop: Sequence[str] = (), batch: int = 16,
             progress: bool = False, desc: str = "generating", wheres: Sequence[str] | None = None) -> list[str]:
    """The text of :func:`completions`."""
    return [c.text for c in completions(sampler, prompts, max_new_tokens=max_new_tokens, stop=stop, batch=batch,
                                        progress=progress, desc=desc, wheres=wheres)]


def cropped_metrics(done: Sequence) -> dict:
    """``{"n_cropped": k}`` when ``k`` > 0 of the completions ``done`` had their prompt cropped to fit the
    context (their scores then say little: the start of the question is gone), else ``{}``."""
    k = sum(c.cropped for c in done)
    return {"n_cropped": k} if k else {}


def check_encodable(tok, prompts: Sequence[str], wheres: Sequence[str]) -> None:
    """A TaskFileError naming the item whose prompt the tokenizer cannot encode (a character vocabulary
    lacks most characters of other text)."""
    for prompt, where in zip(prompts, wheres):
        try:
            tok.encode(prompt)
        except ValueError as e:
            raise TaskFileError(f"{where}: the model's tokenizer cannot encode this prompt ({e})") from None


def gsm8k(sampler, items: Sequence[GSM8KItem], *, shots: Sequence[GSM8KItem] = (), max_new_tokens: int = 256,
          batch: int = 16, progress: bool = False) -> dict:
    """Greedy GSM8K: ``{"metrics": {exact_match_strict, exact_match_flexible, n}, "samples": [...]}``."""
    prompts = [gsm8k_prompt(it.question, shots) for it in items]
    check_encodable(sampler.tok, prompts, [it.where for it in items])
    done = completions(sampler, prompts, max_new_tokens=max_new_tokens, stop=GSM8K_STOP, batch=batch,
                       progress=progress, desc="gsm8k", wheres=[it.where for it in items])
    samples, strict, flexible = [], 0, 0
    for it, c in zip(items, done):
        out = c.text
        s, f = extract.extract_number(out, strict=True), extract.extract_number(out)
        strict += s == it.answer
        flexible += f == it.answer
        samples.append({"where": it.where, "answer": it.answer, "output": out, "strict": s, "flexible": f,
                        "cropped": c.cropped})
    n = len(items)
    return {"metrics": {"exact_match_strict": strict / n, "exact_match_flexible": flexible / n, "n": n,
                        **cropped_metrics(done)}, "samples": samples}


def matcher(match: str, pattern: str | None = None) -> Callable[[str, str], bool]:
    """``(output, answer) -> bool`` for ``match`` in ``MATCHES`` (``regex`` needs ``pattern``;
    ``auto`` compares numbers for an answer that is one, else exact text)."""
    if match not in MATCHES:
        raise ValueError(f"match={match!r}: expected one of {', '.join(MATCHES)}")
    if match == "regex":
        if not pattern:
            raise ValueError("match=regex needs a pattern (e.g. pattern='answer is (\\w+)')")
        try:
            compiled = re.compile(pattern)
        except re.error as e:
            raise ValueError(f"pattern {pattern!r} is not a regular expression ({e})") from None
        return lambda out, ans: extract.regex_match(out, ans, compiled)
    if pattern:
        raise ValueError(f"pattern is for match=regex, not match={match}")
    if match == "auto":
        return lambda out, ans: (extract.numeric_match(out, ans) if extract.normalize_number(ans) is not None
                                 else extract.exact_match(out, ans))
    return extract.exact_match if match == "exact" else extract.numeric_match


def generation(sampler, items: Sequence[GenerationItem], *, match: str = "exact", pattern: str | None = None,
               max_new_tokens: int = 64, stop: Sequence[str] = ("\n",), batch: int = 16,
               progress: bool = False) -> dict:
    """A local generation task: ``{"metrics": {"accuracy", "n"}, "samples": [...]}``.

    Items that name their own ``stop`` strings are generated with those, the rest with ``stop``.
    """
    is_correct = matcher(match, pattern)
    check_encodable(sampler.tok, [it.prompt for it in items], [it.where for it in items])
    outputs: list = [None] * len(items)
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault(it.stop or tuple(stop), []).append(i)
    for stops, idx in groups.items():
        done = completions(sampler, [items[i].prompt for i in idx], max_new_tokens=max_new_tokens, stop=stops,
                           batch=batch, progress=progress, desc="generation", wheres=[items[i].where for i in idx])
        for i, c in zip(idx, done):
            outputs[i] = c
    samples, correct = [], 0
    for it, c in zip(items, outputs):
        ok = any(is_correct(c.text, a) for a in it.answers)
        correct += ok
        samples.append({"where": it.where, "answers": list(it.answers), "output": c.text, "correct": ok,
                        "cropped": c.cropped})
    return {"metrics": {"accuracy": correct / len(items), "n": len(items), **cropped_metrics(outputs)},
            "samples": samples}
