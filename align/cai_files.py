"""Constitutional AI (Bai et al. 2022) on your own constitution and red-team prompts: the recipe of
``lmforge.align.constitutional`` run from files, as the Hugging Face H4 constitutional-ai recipe does.

Inputs (every file is read and checked before anything is written or loaded):

- ``init_from``: a helpful chat model (a run folder, a model folder or a transformers folder, its
  tokenizer and chat template with it). It answers, critiques and revises, and is the feedback model.
- ``prompts``: red-team prompts. JSON lines (or a ``.json`` array, gzip too) read by
  ``lmforge.data.chat_readers``: ``{"prompt": "..."}`` (TRL's prompt-only format, the prompt a string or
  messages) or ``{"messages": [...]}`` ending with the user turn to answer (ShareGPT / Alpaca records
  work too); or a ``.txt`` file, one prompt per non-blank line. A record that ends with an assistant
  turn (a completion, an HH-RLHF transcript) is refused, naming ``file:line``: cut it to its prompt.
- ``principles``: the constitution, critique/revision pairs. A ``.jsonl`` file, one object a line:
  ``{"name"?, "critique", "revision"}`` (``"critic"`` for ``"critique"`` too) or ``{"name"?, "feedback"}``
  (a question for AI feedback); a ``.json`` array of the same objects; or a ``.json`` object as H4's
  ``constitution.json``: ``{"constitutions": [...], "system_chat"?: [few-shot conversations],
  "feedback"?: [texts or objects]}`` (``"principles"`` and ``"examples"`` are read as the first two).
  The few-shot conversations (each ending with an assistant turn) go before every conversation the
  model reads, as H4's ``system_chat`` does. No feedback principles: the paper's
  (``constitutional.FEEDBACK_PRINCIPLES``).
- ``helpful_prompts`` (optional): prompts the model answers as it is; those answers are mixed into the
  SFT data so that harmlessness does not eat helpfulness (the paper mixes in helpfulness samples).
- ``held_out_fraction`` of each prompts file (a seeded draw) is answered by every stage and trained on
  by none. ``max_prompts`` keeps the first N of each file (0: all), as H4's ``max_samples``.

Stages (``lmforge.align.stages``; each a run folder under WORKDIR):

1. ``critiques.jsonl``: the model answers the training prompts, then critiques and revises its answers
   (``critique.revisions`` rounds, a principle drawn per round: ``constitutional.critique_revise``);
   ``revisions.jsonl`` (prompt + final revision) and ``helpful_answers.jsonl`` are chat files
   (``{"messages"}``) that ``lmforge run experiments/sft/sft_chat.py data.path=...`` reads.
2. ``sl/``: SL-CAI, SFT from ``init_from`` on the revisions (empty ones dropped) and the helpful answers.
3. With ``rl.steps`` > 0, ``rl/`` (RL-CAI) by DPO from ``sl/`` on ``pairs.jsonl`` (TRL's format, which
   ``experiments/align/dpo_hh.py data.path=...`` reads). ``feedback.pairs``: ``"ai_feedback"`` (the
   paper's RLAIF) — one answer by ``init_from`` and one by ``sl/`` to each training prompt
   (``feedback.temperature``), labelled by ``init_from`` with the multiple-choice question asked in both
   orders (``constitutional.ai_feedback``; ``feedback.jsonl``), pairs within ``feedback.margin`` of a tie
   dropped; a question too long for the model's context is skipped, not cut (counted). Or
   ``"revisions"`` (H4's preference split): each final revision chosen over the first answer it
   revised, no labels (H4 takes the two halves of its prompts for SFT and DPO; here both stages use
   the same training prompts).
4. ``heldout.jsonl``: every held-out prompt (red-team and helpful) with the greedy reply of each stage —
   ``init`` (the model as given), ``sl``, ``rl`` — side by side; ``report.json``: counts, the critiques'
   and the feedback labels' statistics, and per stage the share of held-out replies that
   ``lmforge.eval.refusal.is_refusal`` calls refusals. That is a phrase heuristic, not a harmlessness
   score: no automatic score of harm exists for arbitrary prompts (the paper uses human preference
   Elo), so read the replies. Refusals up on red-team prompts and flat on helpful ones is what to hope
   for; up on both is over-refusal.

Re-running with the same WORKDIR reads finished data files back (checked to be of the same prompts) and
skips finished stages.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
import random
import re
import statistics
from collections.abc import Sequence
from typing import NamedTuple

from lmforge.align import constitutional as cai
from lmforge.align.common import split_held_out
from lmforge.align.stages import (RecipeConfig, StageConfig, chat_model, check_recipe_start, dpo_stage, read_jsonl,
                                  sft_stage, write_json, write_jsonl)
from lmforge.data.chat import check_messages
from lmforge.eval.refusal import is_refusal
from lmforge.train.optim import OptimConfig

PAIRS = ("ai_feedback", "revisions")
KINDS = ("red_team", "helpful")
PRINCIPLE_FORMAT = ('{"name"?, "critique", "revision"} ("critic" for "critique", as H4\'s constitution.json) '
                    'or {"name"?, "feedback"}')
PROMPT_FORMAT = ('{"prompt": ...} or {"messages": [...]} ending with a user turn (.jsonl / .json), or one prompt '
                 'a line (.txt)')


@dataclasses.dataclass(frozen=True)
class CritiqueConfig:
    """How the model answers, critiques and revises (SL-CAI)."""
    revisions: int = 1               # critique-and-revision rounds per prompt
    temperature: float = 0.0         # 0: greedy answers, critiques and revisions (also the helpful answers)
    max_new_tokens: int = 128
    batch: int = 64                  # conversations per sampler call; 0: all at once


@dataclasses.dataclass(frozen=True)
class FeedbackConfig:
    """RL-CAI's preference pairs and DPO."""
    pairs: str = "ai_feedback"       # PAIRS: the paper's AI labels, or H4's revision-over-first-answer pairs
    temperature: float = 1.0         # ai_feedback: both answers of a pair
    margin: float = 0.0              # ai_feedback: keep pairs with |p_a - 0.5| > margin
    beta: float = 0.1                # DPO's beta
    soft_labels: bool = False        # DPO's target per pair is the label's confidence p_chosen, not 1


@dataclasses.dataclass(frozen=True)
class CAIFilesConfig(RecipeConfig):
    prompts: str = ""                # red-team prompts (module docstring)
    first_user_turn: bool = False    # keep each prompt record's first user turn alone (H4 reads HH-RLHF so)
    principles: str = ""             # the constitution file; "" → the paper's (constitutional.CONSTITUTION)
    helpful_prompts: str = ""        # optional: prompts whose own answers are mixed into SL-CAI's data
    held_out_fraction: float = 0.1   # of each prompts file, answered by every stage, trained on by none
    max_prompts: int = 0             # the first N records of each prompts file; 0: all
    critique: CritiqueConfig = CritiqueConfig()
    feedback: FeedbackConfig = FeedbackConfig()
    sl: StageConfig = StageConfig(steps=200, optim=OptimConfig(lr=1e-5, min_lr=1e-6, warmup_steps=10,
                                                               weight_decay=0.0))
    rl: StageConfig = StageConfig(steps=0, optim=OptimConfig(lr=5e-7, min_lr=5e-8, warmup_steps=10,
                                                             weight_decay=0.0))   # 0 steps: no RL-CAI stage
    seq_len: int = 512               # SFT rows and DPO sides: prompt + revision

    def __post_init__(self):
        super().__post_init__()
        c, f = self.critique, self.feedback
        problems = [msg for bad, msg in (
            (not 0.0 <= self.held_out_fraction < 1.0, f"held_out_fraction={self.held_out_fraction}: expected [0, 1)"),
            (self.max_prompts < 0, f"max_prompts={self.max_prompts}: expected >= 0 (0: all)"),
            (c.revisions < 1, f"critique.revisions={c.revisions}: expected >= 1"),
            (not c.temperature >= 0 or not f.temperature >= 0,
             f"critique.temperature={c.temperature}, feedback.temperature={f.temperature}: expected >= 0"),
            (c.max_new_tokens < 1 or self.eval_max_new_tokens < 1,
             f"critique.max_new_tokens={c.max_new_tokens}, eval_max_new_tokens={self.eval_max_new_tokens}: "
             f"expected >= 1"),
            (c.batch < 0, f"critique.batch={c.batch}: expected >= 0 (0: all at once)"),
            (f.pairs not in PAIRS, f"feedback.pairs={f.pairs!r}: expected one of {', '.join(PAIRS)}"),
            (not 0.0 <= f.margin < 0.5, f"feedback.margin={f.margin}: expected [0, 0.5)"),
            (not f.beta > 0, f"feedback.beta={f.beta}: expected > 0"),
            (self.sl.steps < 1 or self.rl.steps < 0,
             f"sl.steps={self.sl.steps}, rl.steps={self.rl.steps}: expected >= 1 and >= 0 (0: no RL-CAI stage)"),
            (self.seq_len < 16, f"seq_len={self.seq_len}: expected >= 16 tokens"),
        ) if bad]
        if problems:
            raise ValueError("; ".join(problems))

    def check_runnable(self, workdir: pathlib.Path | None = None) -> None:
        """``init_from`` names a language model whose context holds ``seq_len``, and every input file reads
        (:func:`read_inputs`): checked before anything is written. Raises ValueError."""
        check_recipe_start(self.init_from, self.seq_len, "Constitutional AI")
        read_inputs(self)


# ------------------------------------------------------------------------------------- the files


class Constitution(NamedTuple):
    """What a principles file holds."""
    principles: tuple[cai.Principle, ...]
    feedback: tuple[str, ...]                   # feedback principle texts; () → the paper's
    examples: tuple[tuple[dict, ...], ...]      # few-shot conversations, each ending with an assistant turn


def read_prompts(path, *, key: str = "prompts", limit: int = 0, first_user_turn: bool = False) -> list[list[dict]]:
    """The conversations of a prompts file (module docstring), each ending with a user turn; the first
    ``limit`` (0: all); ``first_user_turn``: each record's first user turn alone (an HH-RLHF transcript's
    opening request, as H4's recipe reads its red-team prompts). Raises ValueError, one line naming
    ``file:line`` and what was expected, for a missing or empty file, a malformed record or one ending
    with another turn; ``key`` names the config key in the errors."""
    path = _need_file(path, key, PROMPT_FORMAT)
    if path.suffix == ".txt":
        lines = path.read_text(encoding="utf-8").splitlines()
        found = [(f"{path}:{i}", [{"role": "user", "content": s.strip()}]) for i, s in enumerate(lines, 1) if s.strip()]
    else:
        from lmforge.data.chat_readers import read_chat_records   # pylint: disable=import-outside-toplevel
        records, _ = read_chat_records(path)
        found = [(r.where, r.messages) for r in records]
    out = []
    for where, messages in found[:limit or None]:
        if first_user_turn:
            messages = [next((m for m in messages if m["role"] == "user"), messages[-1])]
        if messages[-1]["role"] != "user":
            raise ValueError(f"{where}: ends with a{'n' if messages[-1]['role'][0] in 'aeiou' else ''} "
                             f"{messages[-1]['role']} turn; expected a prompt ending with the user turn to answer "
                             f"(drop its completion, or first_user_turn=true to keep its first user turn)")
        out.append(messages)
    if not out:
        raise ValueError(f"{path}: no prompts ({key}={path}); expected {PROMPT_FORMAT}")
    return out


def read_principles(path) -> Constitution:
    """The constitution of a principles file (module docstring). Raises ValueError, one line naming
    ``file:line`` and what was expected, for a missing file, invalid JSON, an entry without its
    requests, two principles of one name, or no critique/revision principle at all. ``""``: the paper's
    (``constitutional.CONSTITUTION``), no examples."""
    if not path:
        return Constitution(cai.CONSTITUTION, (), ())
    path = _need_file(path, "principles", PRINCIPLE_FORMAT)
    text = path.read_text(encoding="utf-8")
    examples, feedback_items = [], []
    if path.suffix == ".jsonl":
        items = []
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                items.append((f"{path}:{i}", _loads(line, path, "one JSON object per line", i)))
    else:
        doc = _loads(text, path, f"a JSON array of {PRINCIPLE_FORMAT}, or an object with \"constitutions\"")
        key = next((k for k in ("constitutions", "principles") if isinstance(doc, dict) and k in doc), None)
        if isinstance(doc, dict) and key is None:
            raise ValueError(f"{path}: a JSON object without \"constitutions\" (keys: {sorted(doc)[:6]}); "
                             f"expected {{\"constitutions\": [{PRINCIPLE_FORMAT}, ...], \"system_chat\"?: [...]}} "
                             f"or a JSON array")
        if not isinstance(doc, (dict, list)) or key is not None and not isinstance(doc[key], list):
            raise ValueError(f"{path}: expected a JSON array of {PRINCIPLE_FORMAT} (or H4's {{\"constitutions\": "
                             f"[...]}})")
        items = _located(text, path, doc if key is None else doc[key], key)
        if key is not None:
            shots = "system_chat" if "system_chat" in doc else "examples"
            examples = _located(text, path, doc.get(shots, []), shots)
            feedback_items = _located(text, path, doc.get("feedback", []), "feedback")
    principles, feedback = [], []
    for k, (where, obj) in enumerate(items + [(w, o if isinstance(o, dict) else {"feedback": o})
                                            for w, o in feedback_items]):
        entry = _entry(obj, where, k)
        (feedback if isinstance(entry, str) else principles).append(entry)
    names = [p.name for p in principles]
    if (dup := next((n for n in names if names.count(n) > 1), None)) is not None:
        raise ValueError(f"{path}: two principles named {dup!r}; expected distinct names")
    if not principles:
        raise ValueError(f"{path}: no critique/revision principle; expected at least one {PRINCIPLE_FORMAT}")
    convs = []
    for where, conv in examples:
        conv = check_messages(conv, where=f"{where} (a few-shot conversation)")
        if conv[-1]["role"] != "assistant":
            raise ValueError(f"{where}: a few-shot conversation ending with a {conv[-1]['role']} turn; expected it "
                             f"to end with an assistant turn")
        convs.append(tuple(conv))
    return Constitution(tuple(principles), tuple(feedback), tuple(convs))


def _need_file(path, key: str, expected: str) -> pathlib.Path:
    if not path:
        raise ValueError(f"{key} is empty; expected a file of {expected}")
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"{key}={path}: no such file; expected a file of {expected}")
    return path


def _loads(text: str, path: pathlib.Path, expected: str, line: int = 0):
    """``json.loads(text)``; a ValueError naming ``path:line`` (``line`` of a JSON-lines file, else the error's)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{line or e.lineno}: not valid JSON ({e.msg}); expected {expected}") from None


def _located(text: str, path: pathlib.Path, items, key: str | None) -> list[tuple[str, object]]:
    """``(file:line, item)`` for the items of a JSON array in ``text`` (the top-level one, or the one under
    ``key``), found by decoding the text item by item; ``file: key[i]`` when that fails."""
    if not isinstance(items, list):
        raise ValueError(f"{path}: \"{key}\" is {type(items).__name__}; expected a JSON array")
    lines = []
    try:
        start = (re.search(rf'"{key}"\s*:\s*\[', text).end() - 1) if key else text.index("[")
        decoder, i = json.JSONDecoder(), start + 1
        while True:
            while text[i].isspace() or text[i] == ",":
                i += 1
            if text[i] == "]":
                break
            lines.append(text.count("\n", 0, i) + 1)
            _, i = decoder.raw_decode(text, i)
    except (AttributeError, ValueError, IndexError):
        lines = []
    if len(lines) != len(items):
        return [(f"{path}: {key or ''}[{k}]", item) for k, item in enumerate(items)]
    return [(f"{path}:{n}", item) for n, item in zip(lines, items)]


def _entry(obj, where: str, k: int) -> cai.Principle | str:
    """A principles file's entry: a ``Principle``, or a feedback principle's text."""
    def text(key):
        value = obj[key]
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{where}: \"{key}\" is {value!r:.60}; expected a non-empty string")
        return value.strip()
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object {PRINCIPLE_FORMAT}, got {obj!r:.60}")
    if "feedback" in obj:
        return text("feedback")
    critique = "critique" if "critique" in obj else "critic"
    for key in (critique, "revision"):
        if key not in obj:
            raise ValueError(f"{where}: no \"{'critique' if key == 'critic' else key}\" (keys: {sorted(obj)[:6]}); "
                             f"expected {PRINCIPLE_FORMAT}")
    name = obj.get("name", f"principle_{k}")
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{where}: \"name\" is {name!r:.60}; expected a non-empty string")
    return cai.Principle(name.strip(), text(critique), text("revision"))


class Inputs(NamedTuple):
    """The files of a config, read, and the prompts split (module docstring)."""
    constitution: Constitution
    prompts: list[list[dict]]           # red-team prompts trained on
    helpful: list[list[dict]]           # helpful prompts whose answers are trained on
    held: list[tuple[str, list[dict]]]  # (kind, prompt) answered by every stage


def read_inputs(cfg: CAIFilesConfig) -> Inputs:
    """Reads ``cfg``'s files and splits each prompts file: a seeded ``held_out_fraction`` of it held out
    (at least one prompt when the fraction is > 0, and at least one left to train on). Raises
    ValueError as :func:`read_prompts` / :func:`read_principles`, and for a red-team file too small to
    split."""
    constitution = read_principles(cfg.principles)
    prompts = read_prompts(cfg.prompts, limit=cfg.max_prompts, first_user_turn=cfg.first_user_turn)
    helpful = read_prompts(cfg.helpful_prompts, key="helpful_prompts", limit=cfg.max_prompts,
                           first_user_turn=cfg.first_user_turn) if cfg.helpful_prompts else []
    train, held = split_held_out(prompts, cfg.held_out_fraction, (cfg.seed, 0), at_least_one=True)
    if not train:
        raise ValueError(f"prompts={cfg.prompts}: {len(prompts)} prompt(s), all held out "
                         f"(held_out_fraction={cfg.held_out_fraction}); expected some to train on")
    helpful_train, helpful_held = split_held_out(helpful, cfg.held_out_fraction, (cfg.seed, 1),
                                                 at_least_one=True)
    return Inputs(constitution, train, helpful_train,
                  [("red_team", p) for p in held] + [("helpful", p) for p in helpful_held])


# --------------------------------------------------------------------------------------- runner


def run_cai_files(cfg: CAIFilesConfig, workdir: pathlib.Path) -> dict[str, float]:
    """Runs the stages of the module docstring in ``workdir``; returns the report's numbers flat
    (``data/...``, ``critiques/...``, ``feedback/...``, ``<stage>/final/...``,
    ``heldout/<stage>/<kind>/refusal``). Raises ValueError for a bad input file or config, an
    ``init_from`` that is no weights source, or data files in ``workdir`` made from other prompts."""
    workdir = pathlib.Path(workdir)
    check_recipe_start(cfg.init_from, cfg.seq_len, "Constitutional AI")
    inputs = read_inputs(cfg)
    workdir.mkdir(parents=True, exist_ok=True)
    _check_same_inputs(workdir / "inputs.json", inputs)
    init = _Model(cfg, cfg.init_from)
    held_prompts = [p for _, p in inputs.held]

    # 1. SL-CAI data: critiques and revisions of the model's answers; its own helpful answers; held-out replies
    records, helpful = _critiques(cfg, workdir, inputs, init)
    replies = {"init": _replies(cfg, workdir / "heldout_init.jsonl", held_prompts, init)}
    init.release()
    revisions = [c for c in cai.revision_conversations(records) if c[-1]["content"]]
    write_jsonl(workdir / "revisions.jsonl", [{"messages": c} for c in revisions])
    sl_convs = revisions + [c for c in helpful if c[-1]["content"]]
    finals = {"sl": sft_stage(cfg.sl, "sl", cfg.init_from, sl_convs, [], workdir, seq_len=cfg.seq_len,
                              mesh=cfg.mesh, seed=cfg.seed, vocab_chunk=cfg.vocab_chunk)}
    sl = _Model(cfg, workdir / "sl")
    replies["sl"] = _replies(cfg, workdir / "heldout_sl.jsonl", held_prompts, sl)

    # 2. RL-CAI: preference pairs, DPO from sl/
    feedback = {}
    if cfg.rl.steps:
        if cfg.feedback.pairs == "ai_feedback":
            labels = _feedback(cfg, workdir, inputs, init, sl)
            pairs = cai.preference_pairs([r for r in labels if "skipped" not in r], margin=cfg.feedback.margin)
            feedback = feedback_summary(labels, pairs)
            print(f"feedback: {feedback['kept']:.0f} of {feedback['labelled']:.0f} labelled pairs kept; mean "
                  f"confidence {feedback['mean_p_chosen']:.3f}; the sl answer preferred in "
                  f"{100 * feedback['prefers_sl']:.1f}%", flush=True)
        else:
            pairs = [{"prompt": r["prompt"], "chosen": [{"role": "assistant", "content": r["revision"]}],
                      "rejected": [{"role": "assistant", "content": r["response"]}], "p_chosen": 1.0}
                     for r in records if r["revision"] and r["revision"] != r["response"]]
        sl.release()
        write_jsonl(workdir / "pairs.jsonl", pairs)
        if len(pairs) < 2 and not (workdir / "rl" / "final.json").is_file():
            raise ValueError(f"RL-CAI: {len(pairs)} preference pairs from {len(inputs.prompts)} prompts "
                             f"(feedback.pairs={cfg.feedback.pairs}, feedback.margin={cfg.feedback.margin}); "
                             f"expected >= 2 (more prompts, a lower margin, or rl.steps=0)")
        finals["rl"] = dpo_stage(cfg.rl, "rl", str(workdir / "sl"), pairs, workdir, seq_len=cfg.seq_len,
                                 beta=cfg.feedback.beta, soft_labels=cfg.feedback.soft_labels, mesh=cfg.mesh,
                                 seed=cfg.seed, vocab_chunk=cfg.vocab_chunk)
        replies["rl"] = _replies(cfg, workdir / "heldout_rl.jsonl", held_prompts, _Model(cfg, workdir / "rl"))
    sl.release()

    # 3. the report: held-out replies side by side, counts, refusal rates (a heuristic, not a harm score)
    side = [{"kind": kind, "prompt": p, "replies": {s: replies[s][i] for s in replies},
             "refusal": {s: is_refusal(replies[s][i]) for s in replies}} for i, (kind, p) in enumerate(inputs.held)]
    write_jsonl(workdir / "heldout.jsonl", side)
    report = {
        "data": {"prompts": len(inputs.prompts) + sum(k == "red_team" for k, _ in inputs.held),
                 "train_prompts": len(inputs.prompts), "helpful_prompts": len(inputs.helpful),
                 **{f"held_out_{kind}": sum(k == kind for k, _ in inputs.held) for kind in KINDS},
                 "principles": len(inputs.constitution.principles), "examples": len(inputs.constitution.examples),
                 "sl_conversations": len(sl_convs)},
        "critiques": critique_summary(records),
        "feedback": feedback,
        "heldout_refusal": {s: {kind: _rate([r["refusal"][s] for r in side if r["kind"] == kind]) for kind in KINDS}
                            for s in replies},
        "finals": finals,
        "note": "refusal is lmforge.eval.refusal.is_refusal, a phrase heuristic: no automatic harmlessness score "
                "exists for arbitrary prompts; read heldout.jsonl.",
    }
    write_json(workdir / "report.json", report)
    print(format_report(report), flush=True)
    out = {f"{group}/{k}": float(v) for group in ("data", "critiques", "feedback")
           for k, v in report[group].items() if isinstance(v, (int, float))}
    out.update({f"heldout/{s}/{kind}/refusal": v for s, rates in report["heldout_refusal"].items()
                for kind, v in rates.items()})
    out.update({f"{s}/{k}": float(v) for s, m in finals.items() for k, v in m.items() if isinstance(v, (int, float))})
    return out


def _check_same_inputs(path: pathlib.Path, inputs: Inputs) -> None:
    """Writes a digest of what the files gave (``inputs.json``); a re-run whose files give anything else is
    refused before it reads back (or overwrites) data made from the old ones."""
    def digest(value) -> str:
        return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]
    c = inputs.constitution
    now = {"prompts": digest(inputs.prompts), "helpful_prompts": digest(inputs.helpful),
           "held_out": digest(inputs.held),
           "principles": digest([[dataclasses.asdict(p) for p in c.principles], list(c.feedback), list(c.examples)])}
    if path.is_file():
        changed = [k for k, v in json.loads(path.read_text()).items() if now.get(k) != v]
        if changed:
            raise ValueError(f"{path}: this workdir was made from other {', '.join(changed)} than the files give now; "
                             f"expected the same files (or a new --workdir)")
    else:
        write_json(path, now)


class _Model:
    """A chat model (sampler, template) loaded on first use and dropped by :meth:`release`: a step read back
    from disk loads nothing, and two models are never held at once."""

    def __init__(self, cfg: CAIFilesConfig, source):
        self.cfg, self.source, self._loaded = cfg, source, None

    def get(self):
        if self._loaded is None:
            print(f"loading {self.source}", flush=True)
            self._loaded = chat_model(self.cfg.mesh, self.source)
        return self._loaded

    def release(self):
        self._loaded = None


def _read_back(path: pathlib.Path, prompts: list, prompt_of=lambda r: r["prompt"]) -> list[dict] | None:
    """``read_jsonl(path, len(prompts))``, refused when its records answer other prompts (the files changed)."""
    records = read_jsonl(path, len(prompts))
    if records is not None:
        for i, (r, p) in enumerate(zip(records, prompts)):
            if prompt_of(r) != p:
                raise ValueError(f"{path}: record {i} answers another prompt than the prompts files give now; "
                                 f"expected a new --workdir (or the file removed) for other prompts")
    return records


def _critiques(cfg: CAIFilesConfig, workdir: pathlib.Path, inputs: Inputs, model: _Model):
    """(critique records, helpful conversations: prompt + the model's answer), read back when finished."""
    from lmforge.infer import SamplingConfig, replier   # pylint: disable=import-outside-toplevel
    c, path, helpful_path = cfg.critique, workdir / "critiques.jsonl", workdir / "helpful_answers.jsonl"
    sampling = SamplingConfig(max_new_tokens=c.max_new_tokens, temperature=c.temperature)
    records = _read_back(path, inputs.prompts)
    if records is None:
        reply = replier(*model.get(), sampling, seed=cfg.seed, batch=c.batch)
        records = cai.critique_revise(reply, inputs.prompts, inputs.constitution.principles, revisions=c.revisions,
                                      examples=inputs.constitution.examples, seed=cfg.seed)
        write_jsonl(path, records)
    helpful = _read_back(helpful_path, inputs.helpful, lambda r: r["messages"][:-1]) if inputs.helpful else []
    if helpful is None:
        answers = replier(*model.get(), sampling, seed=cfg.seed + 1, batch=c.batch)(inputs.helpful)
        helpful = [{"messages": p + [{"role": "assistant", "content": a}]} for p, a in zip(inputs.helpful, answers)]
        write_jsonl(helpful_path, helpful)
    return records, [h["messages"] for h in helpful]


def _replies(cfg: CAIFilesConfig, path: pathlib.Path, prompts: list, model: _Model) -> list[str]:
    """A model's greedy replies to ``prompts`` (``eval_max_new_tokens``), ``{"prompt", "reply"}`` records in
    ``path``, read back when finished."""
    if not prompts:
        return []
    records = _read_back(path, prompts)
    if records is None:
        from lmforge.infer import SamplingConfig   # pylint: disable=import-outside-toplevel
        from lmforge.infer.text import chat_replies   # pylint: disable=import-outside-toplevel
        greedy = SamplingConfig(max_new_tokens=cfg.eval_max_new_tokens, temperature=0.0)
        got = chat_replies(*model.get(), prompts, greedy, seed=cfg.seed, batch=cfg.critique.batch)
        records = [{"prompt": p, "reply": r.strip()} for p, r in zip(prompts, got)]
        write_jsonl(path, records)
    return [r["reply"] for r in records]


def _feedback(cfg: CAIFilesConfig, workdir: pathlib.Path, inputs: Inputs, init: _Model, sl: _Model) -> list[dict]:
    """AI feedback records (``constitutional.ai_feedback``, plus ``sl_index``: which response is the sl
    model's) on one ``init_from`` and one ``sl/`` answer per training prompt, ``init_from`` labelling; a
    pair whose question does not fit the model's context gets ``p_a`` 0.5 and ``"skipped"``. Read back
    from ``feedback.jsonl`` when finished."""
    # pylint: disable=import-outside-toplevel
    from lmforge.eval.scoring import Scorer, chat_logprobs
    from lmforge.infer import SamplingConfig, replier
    path, prompts = workdir / "feedback.jsonl", inputs.prompts
    labels = _read_back(path, prompts)
    if labels is not None:
        return labels
    sampling = SamplingConfig(max_new_tokens=cfg.critique.max_new_tokens, temperature=cfg.feedback.temperature)
    answers = {}
    for name, model, seed in (("sl", sl, cfg.seed + 7), ("init", init, cfg.seed + 8)):   # init last: it labels
        got = _read_back(workdir / f"answers_{name}.jsonl", prompts)
        if got is None:
            reply = replier(*model.get(), sampling, seed=seed, batch=cfg.critique.batch)
            got = [{"prompt": p, "answer": a.strip()} for p, a in zip(prompts, reply(prompts))]
            write_jsonl(workdir / f"answers_{name}.jsonl", got)
        answers[name] = [g["answer"] for g in got]
    sl.release()
    sl_first = [random.Random(f"lmforge.cai_files:pair:{cfg.seed}:{i}").random() < 0.5 for i in range(len(prompts))]
    pairs = [(s, h) if first else (h, s) for s, h, first in zip(answers["sl"], answers["init"], sl_first)]
    sampler, template = init.get()
    scorer = Scorer.from_sampler(sampler)
    principles = inputs.constitution.feedback or cai.FEEDBACK_PRINCIPLES
    fits = [_fits(scorer, template, p, pair, principles) for p, pair in zip(prompts, pairs)]
    asked = [i for i, ok in enumerate(fits) if ok]
    got = iter(cai.ai_feedback(lambda c, r: chat_logprobs(scorer, template, c, r), [prompts[i] for i in asked],
                               [pairs[i] for i in asked], principles, seed=cfg.seed))
    labels = [dict(next(got) if ok else {"prompt": p, "responses": list(pair), "principle": None, "p_a": 0.5,
                                         "p_a_orders": [0.5, 0.5], "skipped": "the question is longer than the "
                                                                             "model's context"},
                   sl_index=0 if first else 1)
              for ok, p, pair, first in zip(fits, prompts, pairs, sl_first)]
    init.release()
    write_jsonl(path, labels)
    return labels


def _fits(scorer, template, prompt, pair, principles) -> bool:
    """Whether the feedback question over ``pair`` fits the model's context in both orders, whichever of
    ``principles`` is drawn (``chat_logprobs`` refuses one that does not, rather than cut its start)."""
    from lmforge.eval.scoring import chat_requests   # pylint: disable=import-outside-toplevel
    if pair[0] == pair[1]:
        return True                                   # identical answers: not asked
    questions = [[{"role": "user", "content": cai.feedback_question(prompt, a, b, principle)}]
                 for principle in principles for a, b in (pair, pair[::-1])]
    return all(len(ctx) + len(cont) <= scorer.max_len + 1
               for ctx, cont in chat_requests(template, questions, [cai.OPTIONS[1]] * len(questions)))


# --------------------------------------------------------------------------------------- report


def _rate(values) -> float:
    return sum(map(bool, values)) / len(values) if values else float("nan")


def critique_summary(records: Sequence[dict]) -> dict:
    """What SL-CAI's data looks like: how many revisions differ from the first answer, are empty (left out
    of SFT) or refusals (``is_refusal``), the first answers' refusals, and how often each principle was drawn."""
    used: dict[str, int] = {}
    for r in records:
        for name in r["principles"]:
            used[name] = used.get(name, 0) + 1
    return {"records": len(records), "revised": _rate([r["revision"] != r["response"] for r in records]),
            "empty_revisions": sum(not r["revision"] for r in records),
            "responses_refuse": _rate([is_refusal(r["response"]) for r in records]),
            "revisions_refuse": _rate([is_refusal(r["revision"]) for r in records]),
            "principles_used": used}


def feedback_summary(labels: Sequence[dict], pairs: Sequence[dict]) -> dict[str, float]:
    """The AI labels' statistics: over pairs of distinct answers that were asked (``labelled``), the
    label's confidence ``max(p_a, 1 - p_a)`` (mean, median), the share whose two orders prefer the same
    answer (``orders_agree``: a low one is a letter bias the averaging cancels) and the share preferring the
    sl model's answer; how many pairs were skipped as too long, had identical answers, and were kept."""
    asked = [r for r in labels if "skipped" not in r and r["responses"][0] != r["responses"][1]]
    confidence = [max(r["p_a"], 1 - r["p_a"]) for r in asked]
    return {"labelled": float(len(asked)), "skipped_too_long": float(sum("skipped" in r for r in labels)),
            "identical": float(sum(r["responses"][0] == r["responses"][1] for r in labels)),
            "kept": float(len(pairs)),
            "mean_p_chosen": statistics.fmean(confidence) if confidence else float("nan"),
            "median_p_chosen": statistics.median(confidence) if confidence else float("nan"),
            "orders_agree": _rate([(a - 0.5) * (b - 0.5) > 0 for a, b in (r["p_a_orders"] for r in asked)]),
            "prefers_sl": _rate([(r["p_a"] if r["sl_index"] == 0 else 1 - r["p_a"]) > 0.5 for r in asked])}


def format_report(report: dict) -> str:
    """The report's counts and held-out refusal rates as text."""
    d, c = report["data"], report["critiques"]
    lines = [f"prompts: {d['train_prompts']} red-team trained on, {d['held_out_red_team']} held out; "
             f"{d['helpful_prompts']} helpful trained on, {d['held_out_helpful']} held out; "
             f"{d['principles']} principles; {d['sl_conversations']} SFT conversations",
             f"critiques: {100 * c['revised']:.1f}% of revisions differ from the first answer, "
             f"{100 * c['revisions_refuse']:.1f}% are refusals ({100 * c['responses_refuse']:.1f}% of first answers)",
             f"{'held-out refusals (is_refusal)':32s}" + "".join(f"{s:>10s}" for s in report["heldout_refusal"])]
    for kind in (k for k in KINDS if d[f"held_out_{k}"]):
        lines.append(f"{kind + ' prompts':32s}" + "".join(f"{100 * rates[kind]:9.1f}%"
                                                         for rates in report["heldout_refusal"].values()))
    return "\n".join(lines)


__all__ = ["CAIFilesConfig", "Constitution", "CritiqueConfig", "FeedbackConfig", "Inputs", "PAIRS", "critique_summary",
           "feedback_summary", "format_report", "read_inputs", "read_principles", "read_prompts", "run_cai_files",
           "split"]
