"""What the RL trainers' rollout sources (GRPO's :class:`lmforge.align.grpo.Rollouts`, PPO's
:class:`lmforge.align.ppo.PPORollouts`) share: the stop ids and the prompt-length check, the seeded
order in which prompts are taken, the seed of each rollout, and the rollouts' metrics as means
since the last log, and the buffer that gives one rollout to several optimizer steps (PPO's epochs
and mini-batches, GRPO's ``num_iterations``). A rollout source is the loop's data iterator
(``Trainer.fit``): it samples from the trainer's current policy, and its position — the rollouts
drawn, the steps given of the last one and, between two of those, the rollout's arrays — goes into
every checkpoint through ``get_state`` / ``set_state`` (bytes of text, as grain's checkpoint handler
writes them), so a run resumed between two steps of one rollout trains on the same rows."""

from __future__ import annotations

import abc
import base64
import io
import json
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np


class RolloutData(Protocol):
    """The data fields a rollout source reads (``lmforge.align.grpo.PromptDataConfig`` has them)."""
    seed: int              # the order in which prompts are taken, a new one each pass
    batch_size: int        # prompts a rollout
    max_prompt_len: int    # prompt tokens at most


class RolloutConfig(Protocol):
    """What :class:`RolloutSource` reads of a trainer's config (GRPO's, PPO's, or a new one's)."""
    seed: int              # each rollout's sampling seed and shuffles
    data: RolloutData


class RolloutSource(abc.ABC):
    """The shared part of a rollout iterator over ``items`` (their prompt ids ``prompts``) for a config
    with ``seed``, ``data.seed``, ``data.batch_size`` (prompts a rollout) and ``data.max_prompt_len``
    (:class:`RolloutConfig`).

    Subclasses give :meth:`rollout` (rollout ``k``'s arrays, each with rows first) and, when the rows
    depend on settings beyond ``epochs`` and ``mini_batches``, :meth:`shape`. A rollout feeds
    ``per_rollout = epochs * mini_batches`` optimizer steps: ``epochs`` passes over its rows (GRPO's
    ``num_iterations``, PPO's ``num_ppo_epochs``), each in ``mini_batches`` equal shares shuffled afresh
    each pass from ``(seed, k, epoch)`` (:meth:`batch`; PPO's ``num_mini_batches``). ``next()`` draws a
    rollout every ``per_rollout`` calls.

    Raises ValueError for a config without those fields, a tokenizer with no end-of-turn or eos id, a
    prompt over ``data.max_prompt_len`` tokens, or ``epochs`` / ``mini_batches`` that are not whole
    numbers >= 1."""

    def __init__(self, cfg: RolloutConfig, items: list[dict], prompts: list[list[int]], tok, template, *,
                 epochs: int = 1, mini_batches: int = 1):
        missing = [name for name in ("seed", "data.seed", "data.batch_size", "data.max_prompt_len")
                   if not hasattr(getattr(cfg, "data", None) if name.startswith("data.") else cfg, name.split(".")[-1])]
        if missing:
            raise ValueError(f"{type(cfg).__name__} has no {', '.join(missing)}: a rollout source reads a config "
                             f"with seed and data.seed, data.batch_size, data.max_prompt_len (RolloutConfig)")
        bad = [f"{k}={v!r}" for k, v in (("epochs", epochs), ("mini_batches", mini_batches))
               if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1]
        if bad:
            raise ValueError(f"{', '.join(bad)}: expected whole numbers >= 1 (optimizer steps per rollout)")
        self.epochs, self.mini_batches = int(epochs), int(mini_batches)
        self.per_rollout = self.epochs * self.mini_batches   # optimizer steps each rollout feeds
        self.cfg, self.items, self.prompts, self.tok = cfg, items, prompts, tok
        eos = (tok.eos_id,) if tok.eos_id >= 0 else ()
        self.stops = tuple(dict.fromkeys((*template.stop_ids, *eos)))
        if not self.stops:
            raise ValueError(f"{tok!r} has no end-of-turn or eos id: every completion would run to max_new_tokens")
        long = [i for i, p in enumerate(prompts) if len(p) > cfg.data.max_prompt_len]
        if long:
            raise ValueError(f"prompt {long[0]} has {len(prompts[long[0]])} tokens, over data.max_prompt_len="
                             f"{cfg.data.max_prompt_len}")
        self.count = 0                                   # rollouts drawn
        self.position = 0                                # steps given of the last rollout
        self.buffer: dict[str, np.ndarray] | None = None   # the last rollout's arrays
        self._metrics: list[dict[str, float]] = []
        self._passes: dict[int, np.ndarray] = {}         # pass -> its order of the items (the last two kept)

    def __iter__(self):
        return self

    @abc.abstractmethod
    def rollout(self, k: int) -> dict[str, np.ndarray]:
        """Rollout ``k``'s arrays (rows first); its metrics go to :meth:`record`."""

    def batch(self, buffer: dict[str, np.ndarray], k: int, position: int) -> dict[str, np.ndarray]:
        """The rows of the ``position``-th step (0-based) fed by rollout ``k``: all of them with one
        mini-batch; else mini-batch ``position % mini_batches`` of pass ``position // mini_batches``, the
        rows shuffled afresh each pass (kept in order within a mini-batch). Raises ValueError when the
        rollout's rows do not split into ``mini_batches`` equal shares."""
        if self.mini_batches == 1:
            return buffer
        rows = len(next(iter(buffer.values())))
        if rows % self.mini_batches:
            raise ValueError(f"rollout {k} has {rows} rows, which do not split into mini_batches={self.mini_batches}")
        epoch, mb = divmod(position, self.mini_batches)
        size = rows // self.mini_batches
        picked = np.sort(np.random.default_rng(self.seed(k, epoch)).permutation(rows)[mb * size:(mb + 1) * size])
        return {key: v[picked] for key, v in buffer.items()}

    def shape(self) -> dict[str, int]:
        """The settings, beyond ``epochs`` and ``mini_batches``, that a half-used rollout's arrays depend
        on: a checkpoint holding one is refused when any differs."""
        return {}

    def __next__(self) -> dict[str, np.ndarray]:
        if self.buffer is None or self.position >= self.per_rollout:
            self.buffer, self.position = self.rollout(self.count), 0
            self.count += 1
        out = self.batch(self.buffer, self.count - 1, self.position)
        self.position += 1
        return out

    # grain's checkpoint handler saves get_state() (text, as bytes) and calls set_state, then start_prefetch, on restore
    def _shape(self) -> dict:
        return {"epochs": self.epochs, "mini_batches": self.mini_batches, **self.shape()}

    def get_state(self) -> bytes:
        """The rollouts drawn, the steps given of the last one and, between two of those, its arrays; the
        metrics recorded since the last :meth:`pop_metrics` (so a resumed run logs them as a straight one
        does)."""
        state = {"rollouts": self.count, "position": self.position, "shape": self._shape(), "buffer": None,
                 "metrics": self._metrics}
        if self.buffer is not None and self.position < self.per_rollout:
            f = io.BytesIO()
            np.savez(f, **self.buffer)
            state["buffer"] = base64.b64encode(f.getvalue()).decode("ascii")
        return json.dumps(state).encode()

    def set_state(self, state: bytes) -> None:
        """Restores :meth:`get_state`'s position. Raises ValueError for a half-used rollout written under
        other settings (``epochs``, ``mini_batches``, :meth:`shape`), or one whose arrays are missing."""
        s = json.loads(state)
        now = self._shape()
        changed = [f"{k}={v} (now {now.get(k)})" for k, v in s.get("shape", {}).items() if now.get(k) != v]
        named = [c for c in changed if not c.startswith(("epochs=", "mini_batches="))]
        changed = named or changed   # a subclass's own names (num_iterations, ...) say it best
        position = int(s.get("position", 0))
        if s.get("buffer") and changed:
            raise ValueError(f"the checkpoint holds a rollout half trained on with {', '.join(changed)}; resume with "
                             f"the settings it was written with, or start a new workdir")
        if not s.get("buffer") and 0 < position < s.get("shape", {}).get("epochs", 1) * s.get("shape", {}).get(
                "mini_batches", 1):
            raise ValueError(f"the checkpoint says {position} steps of rollout {int(s['rollouts']) - 1} were taken but "
                             f"holds none of its rows; start a new workdir")
        self.count, self.position, self.buffer = int(s["rollouts"]), position, None
        self._metrics = [dict(m) for m in s.get("metrics", [])]
        if s.get("buffer"):
            with np.load(io.BytesIO(base64.b64decode(s["buffer"])), allow_pickle=False) as z:
                self.buffer = {k: z[k] for k in z.files}

    def seed(self, k: int, *more: int) -> int:
        """Rollout ``k``'s seed (``more``: e.g. an epoch, for a shuffle), drawn from ``(seed, k, *more)``: the
        sampler seeds its calls ``seed``, ``seed + 1``, ... (one per ``max_rows``), so consecutive integers
        would repeat noise across rollouts."""
        return int(np.random.SeedSequence([self.cfg.seed, k, *more]).generate_state(1)[0] >> 1)

    def _pass(self, epoch: int) -> np.ndarray:
        if epoch not in self._passes:   # a rollout spans at most a pass's end and the next one's start
            self._passes = {e: o for e, o in self._passes.items() if e == epoch - 1}
            self._passes[epoch] = np.random.default_rng((self.cfg.data.seed, epoch)).permutation(len(self.items))
        return self._passes[epoch]

    def order(self, k: int) -> list[int]:
        """The item indices of rollout ``k``'s prompts: every item once a pass, in an order drawn from
        ``(data.seed, pass)``."""
        n, per = len(self.items), self.cfg.data.batch_size
        return [int(self._pass(j // n)[j % n]) for j in range(k * per, (k + 1) * per)]

    def record(self, metrics: dict[str, float]) -> None:
        """Keeps one rollout's metrics for :meth:`pop_metrics`."""
        self._metrics.append(metrics)

    def pop_metrics(self) -> dict[str, float]:
        """Means of the rollouts' metrics since the last call, keyed ``train/...`` (``perf/...`` kept):
        ``Trainer.fit(host_metrics=...)``."""
        keys = dict.fromkeys(k for m in self._metrics for k in m)
        out = {(k if k.startswith("perf/") else f"train/{k}"): float(np.mean([m[k] for m in self._metrics if k in m]))
               for k in keys}
        self._metrics = []
        return out

    def start_prefetch(self) -> None:
        """Grain's handler calls it after ``set_state``: nothing is prepared ahead (a rollout needs the
        weights of the step before it)."""


def load_reward_fn(spec: str, key: str = "reward_fn"):
    """The reward function a config names by ``spec``: ``"path/to/file.py:name"`` (a file, relative to
    the working directory) or ``"package.module:name"`` (importable), a callable
    ``reward_fn(task, completion, answer, **columns) -> float`` (TRL's ``reward_funcs``, as a string so
    that it sits in config.json and in sweeps; :func:`score_completions` calls it). Raises ValueError
    naming ``key`` for a spec without ``:``, a file or module that does not load, or a name that is
    missing or not callable."""
    import importlib          # pylint: disable=import-outside-toplevel
    import importlib.util     # pylint: disable=import-outside-toplevel
    import pathlib            # pylint: disable=import-outside-toplevel

    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise ValueError(f"{key}={spec!r}: expected 'path/to/file.py:function' or 'package.module:function'")
    try:
        if where.endswith(".py"):
            path = pathlib.Path(where).expanduser()
            if not path.is_file():
                raise ValueError(f"no such file ({path.resolve()})")
            module_spec = importlib.util.spec_from_file_location(f"lmforge_reward_{path.stem}", path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
    except Exception as e:   # pylint: disable=broad-except  (whatever the user's file raises, said in one line)
        raise ValueError(f"{key}={spec!r}: {where} does not load: {type(e).__name__}: {e}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        raise ValueError(f"{key}={spec!r}: {where} has no function {name!r}" if fn is None else
                         f"{key}={spec!r}: {name} is a {type(fn).__name__}, not a function")
    check_reward_signature(fn, f"{key}={spec!r}")
    return fn


def check_reward_signature(reward_fn, key: str = "reward_fn") -> None:
    """``reward_fn`` can be called as ``reward_fn(task, completion, answer)``. Raises ValueError naming
    ``key`` otherwise, with the form expected (TRL's batched ``reward_funcs(completions, **kwargs)``
    need a per-completion wrapper). A function whose signature cannot be read passes."""
    import inspect   # pylint: disable=import-outside-toplevel
    try:
        signature = inspect.signature(reward_fn)
    except (TypeError, ValueError):
        return
    try:
        signature.bind_partial("task", "completion", "answer")   # later required ones are columns
    except TypeError:
        name = getattr(reward_fn, "__name__", "reward_fn")
        raise ValueError(f"{key}: {name}{signature} cannot be called as {name}(task, completion, answer); expected "
                         f"def {name}(task, completion, answer, **columns) -> float, called once per completion (a "
                         f"TRL reward function, which takes a batch as (completions, **kwargs), needs a wrapper)"
                         ) from None


class WeightedRewards:
    """Several reward functions as one, TRL's ``reward_funcs`` with ``reward_weights``: a completion's
    reward is ``sum(weight * fn(task, completion, answer, **columns))``, each function given the
    columns it declares (:func:`score_completions`). ``last`` holds each function's mean over the
    last call's completions, ``{"rewards/<name>/mean": ...}`` (TRL's metric names), for the rollout's
    metrics."""

    def __init__(self, funcs: Sequence[tuple[str, Callable, float]]):
        self.funcs = [(str(name), fn, float(weight)) for name, fn, weight in funcs]
        self.__name__ = " + ".join(f"{w:g} * {name}" for name, _, w in self.funcs)
        self.last: dict[str, float] = {}


def load_reward_funcs(pairs, key: str = "reward_funcs") -> WeightedRewards:
    """The :class:`WeightedRewards` a config's ``reward_funcs`` names: ``(("rewards.py:correct", 1.0),
    ("rewards.py:brevity", 0.1))``, each spec loaded by :func:`load_reward_fn`, named by its function
    (by its spec where two share a name). Raises ValueError naming ``key`` for no pair, a pair that is
    not (spec, weight) with a finite weight, or a spec that does not load."""
    import math   # pylint: disable=import-outside-toplevel
    if not pairs:
        raise ValueError(f"{key}=(): expected (('file.py:fn', weight), ...)")
    funcs = []
    for i, pair in enumerate(pairs):
        if (not isinstance(pair, (tuple, list)) or len(pair) != 2 or not isinstance(pair[0], str)
                or isinstance(pair[1], bool) or not isinstance(pair[1], (int, float)) or not math.isfinite(pair[1])):
            raise ValueError(f"{key}: item {i} is {pair!r}; expected ('file.py:fn', weight) with a finite weight")
        funcs.append((pair[0].rpartition(":")[2], load_reward_fn(pair[0], f"{key}[{i}]"), pair[1]))
    names = [n for n, _, _ in funcs]
    return WeightedRewards([(pairs[i][0] if names.count(n) > 1 else n, fn, w) for i, (n, fn, w) in enumerate(funcs)])


def configured_reward(cfg):
    """The reward a GRPO / PPO config names: its ``reward_funcs`` (:func:`load_reward_funcs`), else its
    ``reward_fn`` (:func:`load_reward_fn`), else None (the task's grader). Raises ValueError when both
    are set or one does not load."""
    if cfg.reward_funcs and cfg.reward_fn:
        raise ValueError(f"reward_fn={cfg.reward_fn!r} and reward_funcs={cfg.reward_funcs!r} are both set; expected "
                         f"one (reward_funcs holds one function too)")
    if cfg.reward_funcs:
        return load_reward_funcs(cfg.reward_funcs)
    return load_reward_fn(cfg.reward_fn) if cfg.reward_fn else None


REWARD_SOURCES = "reward_sources.json"   # in an RL run's workdir: the reward functions' source digests


def reward_source_digests(cfg) -> dict[str, str]:
    """``{spec: sha256 (16 hex digits) of its source file}`` for every reward function ``cfg`` names by a
    string (``reward_fn``, each spec of ``reward_funcs``): a ``file.py:fn`` spec's file, a
    ``module:fn`` spec's module file; a module without a file (built in) is left out. {} for the grader."""
    import hashlib           # pylint: disable=import-outside-toplevel
    import importlib.util    # pylint: disable=import-outside-toplevel
    import pathlib           # pylint: disable=import-outside-toplevel

    specs = [pair[0] for pair in cfg.reward_funcs] if cfg.reward_funcs else [cfg.reward_fn] if cfg.reward_fn else []
    out = {}
    for spec in specs:
        where = spec.rpartition(":")[0]
        if where.endswith(".py"):
            path = pathlib.Path(where).expanduser()
        else:
            origin = getattr(importlib.util.find_spec(where), "origin", None)
            path = pathlib.Path(origin) if origin and origin.endswith(".py") else None
        if path is not None and path.is_file():
            out[spec] = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return out


def check_reward_sources(cfg, workdir, say: Callable[[str], None]) -> None:
    """Keeps ``workdir/reward_sources.json`` (:data:`REWARD_SOURCES`) of the reward functions' source
    digests (:func:`reward_source_digests`): written at a run's start; on a resume, a file that changed
    since is said in one line (the rewards logged before and after it come from different code, which
    the metrics alone cannot show), and the file keeps every digest seen with the step it was first
    seen at (``history``). Nothing is refused: fixing a reward function mid-run is a researcher's call.
    Only process 0 writes."""
    import jax       # pylint: disable=import-outside-toplevel
    import pathlib   # pylint: disable=import-outside-toplevel

    digests = reward_source_digests(cfg)
    path = pathlib.Path(workdir) / REWARD_SOURCES
    record = json.loads(path.read_text()) if path.is_file() else {"history": []}
    before = record["history"][-1]["digests"] if record["history"] else None
    if before == digests:
        return
    checkpoints = pathlib.Path(workdir) / "checkpoints"   # the step a resume starts from (0: none yet)
    steps = [int(c.name) for c in checkpoints.iterdir() if c.name.isdigit()] if checkpoints.is_dir() else []
    step = max(steps, default=0)
    for spec, digest in digests.items():
        if before is not None and before.get(spec) not in (None, digest):
            say(f"reward: {spec.rpartition(':')[0]} changed since this run last ran (sha256 {before[spec]} -> "
                f"{digest}): the rewards from step {step} on come from the new code")
    record["history"].append({"step": step, "digests": digests})
    if jax.process_index() == 0:
        path.write_text(json.dumps(record, indent=2) + "\n")


def reward_source(cfg, reward_fn, by_grader: bool) -> str:
    """What scores an RL run's completions, for its start-up line: the grader with ``cfg.data.match``,
    the function ``cfg.reward_fn`` names, or one given from Python."""
    if by_grader:
        return f"the task grader (data.match={cfg.data.match} for items without a task)"
    if isinstance(reward_fn, WeightedRewards):
        return f"reward_funcs {reward_fn.__name__}"
    return f"reward_fn {cfg.reward_fn}" if cfg.reward_fn else f"reward_fn {getattr(reward_fn, '__name__', reward_fn)}"


FIXED = ("task", "completion", "answer")   # what every reward function is given, in this order
PROMPT = "prompt"   # a keyword every item has: the messages the model was asked (TRL's ``prompts``)


def reward_columns(reward_fn) -> tuple[bool, frozenset[str], frozenset[str]]:
    """``(takes_all, accepted, required)``: which of an item's columns ``reward_fn`` is given as keyword
    arguments beyond its first three (:data:`FIXED`): all of them when it has ``**kwargs`` (TRL's
    reward functions get every data set column so), else the names it declares; ``required`` are
    those without a default. A function whose signature cannot be read is given none."""
    import inspect   # pylint: disable=import-outside-toplevel
    try:
        params = list(inspect.signature(reward_fn).parameters.values())
    except (TypeError, ValueError):
        return False, frozenset(), frozenset()
    named = [p for p in params[len(FIXED):] if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return (any(p.kind == p.VAR_KEYWORD for p in params), frozenset(p.name for p in named),
            frozenset(p.name for p in named if p.default is p.empty))


def check_reward_columns(reward_fn, items: list[dict], key: str = "reward_fn") -> None:
    """Every item has the columns ``reward_fn`` requires (:func:`reward_columns`). Raises ValueError
    naming the first item (its ``where``) that lacks one, before anything is sampled."""
    if isinstance(reward_fn, WeightedRewards):
        for name, fn, _ in reward_fn.funcs:
            check_reward_columns(fn, items, f"reward_funcs {name}")
        return
    check_reward_signature(reward_fn, key)
    _, _, required = reward_columns(reward_fn)
    for it in items:
        missing = sorted(required - set(it.get("columns", {})) - {PROMPT})
        if missing:
            have = sorted(it.get("columns", {}))
            raise ValueError(f"{it.get('where', 'an item')}: {key} {getattr(reward_fn, '__name__', reward_fn)!s} "
                             f"needs the column{'s' * (len(missing) > 1)} {', '.join(missing)}; the record has "
                             + (", ".join(have) if have else "no columns besides its conversation"))


def score_completions(reward_fn, texts: list[str], items: list[dict], where: str = "") -> np.ndarray:
    """``(N,)`` float32 rewards: ``reward_fn(task, completion, answer, **columns)`` for each completion
    text and its item (``{"task", "answer", "messages", "columns"?, ...}``), given the item's columns
    the function accepts (:func:`reward_columns`; TRL passes a data set's extra columns to
    ``reward_funcs`` so), a column named ``task``, ``completion`` or ``answer`` never twice (the
    ``answer`` column is the third argument as the file holds it: a number stays a number), and
    ``prompt``: the messages the model was asked (``lmforge.eval.chat.prompt_messages``; TRL's
    ``prompts``). ``where`` (``"of rollout 3"``) names the call in errors. Raises ValueError, in one
    line naming the completion, when the function raises or gives something other than a finite
    number."""
    from lmforge.eval.chat import prompt_messages   # pylint: disable=import-outside-toplevel

    if isinstance(reward_fn, WeightedRewards):   # each function's rewards, weighted and summed
        total = np.zeros(len(texts), np.float32)
        for name, fn, weight in reward_fn.funcs:
            part = score_completions(fn, texts, items, where)
            reward_fn.last[f"rewards/{name}/mean"] = float(part.mean()) if len(part) else float("nan")
            total += np.float32(weight) * part
        return total
    takes_all, accepted, _ = reward_columns(reward_fn)
    out = np.zeros(len(texts), np.float32)
    for r, (text, it) in enumerate(zip(texts, items)):
        task = it.get("task", "")
        columns = {k: v for k, v in it.get("columns", {}).items() if k not in FIXED and (takes_all or k in accepted)}
        if (takes_all or PROMPT in accepted) and "messages" in it:
            columns[PROMPT] = prompt_messages(it["messages"])
        said = f"completion {r}{' ' + where if where else ''} (task {task!r}, {text[:60]!r})"
        stored = it.get("columns", {})
        answer = stored["answer"] if "answer" in stored else it.get("answer")   # as the file holds it (11, not '11')
        try:
            value = reward_fn(task, text, answer, **columns)
        except Exception as e:   # pylint: disable=broad-except  (the user's function: said with its input)
            raise ValueError(f"reward_fn raised {type(e).__name__}: {e} on {said}") from e
        if not isinstance(value, (int, float, np.number)) or not np.isfinite(value):
            raise ValueError(f"reward_fn gave {value!r} for {said}; expected a finite number")
        out[r] = value
    return out


def reward_eval(sampler, template, items: list[dict], reward_fn, grade, match: str, sampling,
                seed: int, batch: int, samples_out: list) -> dict[str, float]:
    """A held-out evaluation beside a reward function of one's own: greedy replies to ``items`` (their
    prompts, ``lmforge.eval.chat.prompt_messages``), scored by ``reward_fn`` as rollouts are
    (``eval/reward`` over ``eval/reward_n`` replies, TRL's eval ``reward``; with several functions, each
    one's mean as ``eval/rewards/<name>/mean``) and, for those whose answer the grader can check
    (``lmforge.align.sft.check_graded``), graded (``eval/accuracy`` of ``eval/n``).
    The samples (prompt, answer, reply, reward, correct) replace ``samples_out``'s."""
    import jax   # pylint: disable=import-outside-toplevel

    from lmforge.align.sft import check_graded   # pylint: disable=import-outside-toplevel
    from lmforge.eval.chat import chat_replies, prompt_messages   # pylint: disable=import-outside-toplevel

    prompts = [prompt_messages(it["messages"]) for it in items]
    schemas = [it.get("tools") for it in items]   # a chat file's tools column, shown as SFT trained it
    replies = chat_replies(sampler, template, prompts, sampling, seed=seed, batch=batch,
                           progress=jax.process_index() == 0, tools=schemas)
    rewards = score_completions(reward_fn, replies, items, where="of the held-out replies")
    m = {"eval/reward": float(rewards.mean()), "eval/reward_n": float(len(items)),
         **{f"eval/{k}": v for k, v in getattr(reward_fn, "last", {}).items()}}   # several functions: each one's mean
    samples = [{"task": it.get("task"), "prompt": p, "answer": it.get("answer"), "reply": r, "reward": float(v)}
               for it, p, r, v in zip(items, prompts, replies, rewards)]
    graded = [k for k, it in enumerate(items) if it.get("answer") is not None and check_graded(it, match) is None]
    for k in graded:
        samples[k]["correct"] = bool(grade(items[k]["task"], replies[k], items[k]["answer"]))
    if graded:
        m.update({"eval/accuracy": float(np.mean([samples[k]["correct"] for k in graded])), "eval/n": float(len(graded))})
    samples_out[:] = samples
    return m
