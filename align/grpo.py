"""Reinforcement learning with verifiable rewards by GRPO: the config and the runner behind
``lmforge run experiments/align/grpo_*.py``.

A policy (``init_from``: usually an SFT run) answers problems whose answers can be checked; each step
samples ``num_generations`` completions of each of ``data.batch_size`` prompts (a *rollout*), grades
them (reward 1 for a correct final answer, else 0), turns the rewards into group-relative advantages
and takes one policy-gradient step: Group Relative Policy Optimization (Shao et al. 2024,
"DeepSeekMath"), the recipe of DeepSeek-R1 (2025), as TRL's ``GRPOTrainer`` runs it (its defaults:
one update per rollout, ``loss_type="dapo"``, ``beta=0``).

- Data: problems with reference answers — synthetic tasks (``data.synthetic``: the verifiable tasks
  of ``lmforge.data.synthetic``, train and test splits disjoint; not ``calculator``, which is answered
  through a tool: rollouts run no tools, so it is refused) and/or a file (``data.path``):
  GSM8K, or any chat file whose records carry an ``answer`` column (TRL's ``{"prompt": ...,
  "answer": ...}`` included; a ``task`` column names a grader, else ``data.match`` grades: exact,
  numeric or regex). The prompt is the conversation before the reference reply (or the whole
  conversation when it ends with a user turn), through the chat template. Rewards come from the
  task's grader (``lmforge.align.sft.grader``: synthetic graders, GSM8K's ``#### n`` strictly), or
  from a function of one's own named in the config (``reward_fn="rewards.py:brevity"``:
  ``reward_fn(task, completion, answer, **columns) -> float``, ``answer`` None for a problem without
  one, which then trains too; the record's other columns — test cases, say — and ``prompt``, the
  messages asked, come as keyword arguments when the function declares them or ``**kwargs``, as
  TRL's ``reward_funcs`` get a data set's columns and the prompts); an exception it raises ends the
  run in one line naming the completion. Several functions with weights, TRL's ``reward_funcs`` with
  ``reward_weights``: ``reward_funcs=(("rewards.py:correct", 1.0), ("rewards.py:brevity", 0.1))``
  sums them and logs each one's mean (``rewards/<name>/mean``). Ready ones, named the same way
  (``"lmforge.align.rewards:accuracy"``): ``lmforge.align.rewards``' outcome, step (``a + b = c``
  checked), answer-line and ``<think>`` format rewards.
- Rollouts (:class:`Rollouts`) are sampled by the one sampler (``lmforge.infer.Sampler``) from the
  policy as it is after the previous step, at ``temperature`` (with ``top_k`` / ``top_p``), and end at
  the template's end-of-turn id (trained, as TRL trains the EOS) or at ``max_new_tokens``. The
  rollout source is the loop's data iterator: its position (the rollouts drawn) is saved with every
  checkpoint, and each rollout's prompts and sampling seed follow from ``(seed, its index)``, so a
  resumed run draws the same rollouts from the same weights.
- ``num_iterations`` (the paper's mu, TRL's ``num_iterations``): each rollout feeds that many
  optimizer steps on all its rows. The sampling policy's log-probs (``old_logprobs``) are computed
  once, when the rollout is drawn, so from the second step on the ratio ``pi / pi_old`` moves and the
  clip (``epsilon``, ``epsilon_high``) bounds the update; ``clip_ratio/*`` are logged. A checkpoint
  taken between two steps of one rollout holds its rows, and the run resumes on them. ``Rollouts(advantage_fn=...)`` takes
  another advantage (RLOO's leave-one-out baseline, say) for a trainer built on the same pieces.
- ``steps_per_generation`` (TRL's): each pass over a rollout is split into that many optimizer steps,
  each on ``data.batch_size * num_generations / steps_per_generation`` rows shuffled afresh each pass
  (advantages are taken over the whole rollout first, so groups may be split). From the second
  step on the policy has moved, so ``old_logprobs`` are kept as with ``num_iterations``. A rollout
  feeds ``num_iterations * steps_per_generation`` steps. Each step's ``dapo`` loss is the token mean
  of its own rows; TRL divides by the whole rollout's token count and sums the slices into one
  optimizer step when ``steps_per_generation`` equals its ``gradient_accumulation_steps`` (its default).
- ``importance_sampling_level="sequence"``: one importance ratio per completion (GSPO, Zheng et al.
  2025; TRL's option), best with ``loss_type="grpo"`` (the paper's per-sequence objective). It only
  matters when the ratio moves (``num_iterations`` or ``steps_per_generation`` > 1).
- Loss: ``lmforge.train.objectives.grpo_loss`` on the completion tokens' log-probs under
  ``softmax(logits / temperature)`` (the distribution sampled when ``top_k`` and ``top_p`` are off; with
  them the sampler draws from a filtered one, which the loss does not see, as in TRL; no dropout),
  with the advantages of
  ``group_advantages`` (``scale_rewards``); the old log-probs are the current ones without gradient
  (ratio 1) when a rollout feeds one step, the rollout's ``old_logprobs`` otherwise. ``beta > 0``
  adds the k3 KL to a frozen reference: the
  starting policy (``reference_from`` to name another; under LoRA, the adapters' base).
- Logged each ``log_every`` steps beside the loss: TRL's ``reward``, ``reward_std``,
  ``frac_reward_zero_std``, ``completions/mean_length``, ``completions/clipped_ratio`` (completions
  cut at ``max_new_tokens``), ``reward/<task>`` with several tasks, and ``perf/rollout_s`` (seconds
  per rollout), as means over the steps since the last log.
- Evaluation (``eval_on_start``, ``eval_every``, the end): greedy replies to ``eval_generate``
  held-out problems, graded by the task's grader (``eval/accuracy`` of ``eval/n``, per task with
  several); beside a reward function of one's own, also scored by it (``eval/reward`` over
  ``eval/reward_n``, every held-out prompt, answer or not: ``lmforge.align.rollouts.reward_eval``), the accuracy then
  over those whose answer the grader can check. The last replies, with their prompts, go to
  ``eval_samples.jsonl``.

Not built: rewards from a reward model, rollouts split over processes (a run with several processes
is refused).
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lmforge.align.common import (PolicyAndReference, check_policy_sources, check_rows, final_metrics,
                                  prepare_policy, raise_problems, say, start_run, whole, write_eval_samples)
from lmforge.align.dpo import _load_reference, without_adapters
from lmforge.align.rollouts import (RolloutSource, check_reward_columns, check_reward_sources, configured_reward,
                                    reward_eval, reward_source, score_completions)
from lmforge.align.sft import (FILE_FORMATS, check_graded, check_match, check_references, graded_tasks, grader,
                               held_out_graded, read_items)
from lmforge.data import synthetic
from lmforge.eval.chat import task_tools
from lmforge.infer import Sampler, SamplingConfig
from lmforge.infer.sampler import FINISH_LENGTH
from lmforge.model import LoRAConfig, ModelRuntime, axis_rules, forward_logprobs
from lmforge.model.logprobs import VOCAB_CHUNK, check_vocab_chunk
from lmforge.model.lora import ADAPTER_PATTERN
from lmforge.train import distributed
from lmforge.train.mesh import MeshConfig, make_mesh
from lmforge.train.objectives import (GRPO_LOSS_TYPES, IMPORTANCE_SAMPLING_LEVELS, SCALE_REWARDS, group_advantages,
                                      grpo_loss)
from lmforge.train.optim import OptimConfig
from lmforge.train.trainer import LoopConfig, Trainer

RewardFn = Callable[..., float]   # (task, completion text, reference answer, **columns) -> reward
AdvantageFn = Callable[[np.ndarray], tuple]   # rewards (P * G,) -> (advantages (P * G,), {metric: value})


@dataclasses.dataclass(frozen=True)
class PromptDataConfig:
    """Where the prompts of an RL run (GRPO, PPO) come from and how many a rollout answers."""
    path: str = ""                   # GSM8K (question / answer with ``#### n``) or any chat file (an answer column, a reward model or reward_fn)
    format: str = "auto"             # FILE_FORMATS of lmforge.align.sft (graded rewards: items without an answer are left out)
    test_path: str = ""              # held-out problems; "" → a val_fraction of `path`
    val_fraction: float = 0.1
    synthetic: tuple[tuple[str, float], ...] = ()   # (task, weight) pairs of synthetic.VERIFIABLE tasks
    train_size: int = 2000           # synthetic problems drawn for training
    test_size: int = 200             # held-out problems kept (synthetic: drawn from the test split)
    batch_size: int = 8              # GLOBAL prompts per rollout (GRPO: a step of batch_size * num_generations rows)
    max_prompt_len: int = 128        # prompt tokens (chat template included); longer prompts are left out
    match: str = "auto"              # how a file's answers without a task column are graded: auto | exact | numeric | regex
    pattern: str = ""                # match=regex: what to extract from a reply (group 1, else the whole match)
    seed: int = 0

    def __post_init__(self):
        unknown = [t for t, _ in self.synthetic if t not in synthetic.VERIFIABLE]
        # Rollouts sample one turn and run no tools: a tool-use task's completions would be bare calls,
        # rewarded 0 by its grader, so the run would learn nothing and say nothing.
        tool_tasks = [(t, tools) for t, _ in self.synthetic if t not in unknown and (tools := task_tools(t))]
        problems = [msg for bad, msg in (
            *check_match(self),
            (not self.path and not self.synthetic, "no data: set data.path (a GSM8K or chat file) or data.synthetic"),
            (self.format not in FILE_FORMATS, f"data.format={self.format!r}: expected one of {', '.join(FILE_FORMATS)}"),
            (not 0.0 <= self.val_fraction < 1.0, f"data.val_fraction={self.val_fraction}: expected [0, 1)"),
            (self.batch_size < 1 or self.max_prompt_len < 1,
             f"data.batch_size={self.batch_size}, data.max_prompt_len={self.max_prompt_len}: expected each >= 1"),
            (any(w < 0 for _, w in self.synthetic) or (self.synthetic and not sum(w for _, w in self.synthetic) > 0),
             f"data.synthetic={self.synthetic}: expected (task, weight) pairs with weights >= 0 and a positive sum"),
            (unknown, f"data.synthetic: {', '.join(map(repr, unknown))} has no checkable answer; expected tasks of "
                      f"{', '.join(synthetic.VERIFIABLE)}"),
            *((True, f"data.synthetic: task {t} is answered through the {'+'.join(tools)} tool, but rollouts do not "
                     f"run tools (its completions would be bare calls, never the answer); expected tasks answered "
                     f"in text")
              for t, tools in tool_tasks),
            *((not whole(getattr(self, k)), f"data.{k}={getattr(self, k)!r}: expected a whole number >= 0")
              for k in ("train_size", "test_size")),
        ) if bad]
        if problems:
            raise ValueError("; ".join(problems))


@dataclasses.dataclass(frozen=True)
class GRPOConfig(PolicyAndReference, LoopConfig):
    """The loop's fields (steps, seed, log_every, eval_every, checkpoint_every, ...) come from LoopConfig."""
    init_from: str = ""              # the starting policy: a run folder, a model folder or a transformers folder
    reference_from: str = ""         # the frozen reference for beta > 0; "" → the starting policy (under LoRA: its base)
    data: PromptDataConfig = PromptDataConfig(synthetic=(("arithmetic", 1.0),))
    reward_fn: str = ""              # "file.py:fn" or "module:fn" (load_reward_fn); "" → the task's grader
    reward_funcs: tuple[tuple[str, float], ...] = ()   # (spec, weight) pairs summed (TRL's reward_funcs + reward_weights)
    num_generations: int = 8         # G: completions per prompt (the group)
    num_iterations: int = 1          # mu: passes over each rollout (> 1: clipped against its old log-probs)
    steps_per_generation: int = 1    # optimizer steps a pass over a rollout is split into (TRL's steps_per_generation)
    max_new_tokens: int = 128        # completion tokens at most (TRL's max_completion_length)
    temperature: float = 1.0         # > 0: rollouts are sampled, and the loss's log-probs are of softmax(logits / T)
    top_k: int = 0                   # 0 → off
    top_p: float = 1.0               # 1.0 → off
    beta: float = 0.0                # KL coefficient; 0 → no reference (TRL's default)
    epsilon: float = 0.2             # the clip range's lower side
    epsilon_high: float = 0.0        # its upper side; 0 → epsilon (DAPO's clip-higher uses 0.28)
    loss_type: str = "dapo"          # GRPO_LOSS_TYPES
    importance_sampling_level: str = "token"   # IMPORTANCE_SAMPLING_LEVELS: a ratio per token, or per completion (GSPO)
    scale_rewards: str = "group"     # SCALE_REWARDS: divide advantages by the group's std, the batch's, or not
    mask_truncated_completions: bool = False   # leave completions cut at max_new_tokens out of the loss (DAPO)
    optim: OptimConfig = OptimConfig(lr=1e-5, min_lr=1e-6, warmup_steps=0, weight_decay=0.0)
    lora: LoRAConfig = LoRAConfig()  # rank > 0: train low-rank adapters only
    model: ModelRuntime = ModelRuntime()   # how the loaded model computes ("": the source's)
    mesh: MeshConfig = MeshConfig()
    distributed: distributed.DistributedConfig = distributed.DistributedConfig()
    synthetic_options: tuple[tuple[str, str | int | float], ...] = ()   # (option, value): synthetic.OPTIONS
    eval_on_start: bool = True       # score the starting policy at step 0: the number RL must beat
    eval_generate: int = 100         # held-out problems replied to (greedy) at each eval; 0 → none
    eval_batch_size: int = 0         # prompts per sampler call in evaluation; 0 → data.batch_size * num_generations
    vocab_chunk: int = VOCAB_CHUNK   # the loss's logits, columns at a time (recomputed backward); 0 → all V at once

    def __post_init__(self):
        super().__post_init__()
        check_vocab_chunk(self.vocab_chunk)
        problems = [msg for bad, msg in (
            (not isinstance(self.num_generations, int) or self.num_generations < 2,
             f"num_generations={self.num_generations!r}: expected a whole number >= 2 (a group needs two to compare)"),
            (not whole(self.num_iterations) or self.num_iterations < 1,
             f"num_iterations={self.num_iterations!r}: expected a whole number >= 1 (passes over each rollout)"),
            (not whole(self.steps_per_generation) or self.steps_per_generation < 1,
             f"steps_per_generation={self.steps_per_generation!r}: expected a whole number >= 1 (optimizer steps "
             f"a pass over a rollout is split into)"),
            (whole(self.steps_per_generation) and self.steps_per_generation >= 1
             and isinstance(self.num_generations, int) and self.rows % self.steps_per_generation,
             f"data.batch_size * num_generations = {self.data.batch_size} * {self.num_generations} rows do not split "
             f"into steps_per_generation={self.steps_per_generation} equal steps"),
            (self.importance_sampling_level not in IMPORTANCE_SAMPLING_LEVELS,
             f"importance_sampling_level={self.importance_sampling_level!r}: expected one of "
             f"{', '.join(IMPORTANCE_SAMPLING_LEVELS)}"),
            (not whole(self.max_new_tokens) or self.max_new_tokens < 1,
             f"max_new_tokens={self.max_new_tokens!r}: expected a whole number >= 1"),
            (not self.temperature > 0, f"temperature={self.temperature}: expected > 0 (rollouts are sampled)"),
            (self.top_k < 0 or not 0 < self.top_p <= 1, f"top_k={self.top_k}, top_p={self.top_p}: expected "
                                                        f"top_k >= 0 and top_p in (0, 1]"),
            (not self.beta >= 0, f"beta={self.beta}: expected >= 0"),
            (not (self.epsilon >= 0 and self.epsilon_high >= 0),
             f"epsilon={self.epsilon}, epsilon_high={self.epsilon_high}: expected each >= 0"),
            (self.loss_type not in GRPO_LOSS_TYPES,
             f"loss_type={self.loss_type!r}: expected one of {', '.join(GRPO_LOSS_TYPES)}"),
            (self.scale_rewards not in SCALE_REWARDS,
             f"scale_rewards={self.scale_rewards!r}: expected one of {', '.join(SCALE_REWARDS)}"),
            (self.reference_from and not self.beta,
             f"reference_from={self.reference_from} is read only with beta > 0 (the KL term); beta is 0"),
            (self.beta and self.reference_is_base() and self.optim.trainable not in ((), (ADAPTER_PATTERN,)),
             f"optim.trainable={self.optim.trainable} trains more than the LoRA adapters, but the reference is the "
             f"adapters' base (it would move with them); set reference_from to load a frozen reference"),
            (self.prefetch, f"prefetch={self.prefetch}: a rollout is sampled from the weights of the step before "
                            f"it, so it cannot be prepared ahead; expected 0"),
            *((not whole(getattr(self, k)), f"{k}={getattr(self, k)!r}: expected a whole number >= 0")
              for k in ("eval_generate", "eval_batch_size")),
        ) if bad]
        raise_problems(problems, self)

    @property
    def rows(self) -> int:
        """Completions per rollout: ``data.batch_size * num_generations``."""
        return self.data.batch_size * self.num_generations

    @property
    def step_rows(self) -> int:
        """Completions per optimizer step: ``rows / steps_per_generation``."""
        return self.rows // self.steps_per_generation

    @property
    def steps_per_rollout(self) -> int:
        """Optimizer steps each rollout feeds: ``num_iterations * steps_per_generation``."""
        return self.num_iterations * self.steps_per_generation

    @property
    def seq_len(self) -> int:
        """The training rows' width: the longest prompt and completion."""
        return self.data.max_prompt_len + self.max_new_tokens

    def check_runnable(self, workdir: pathlib.Path | None = None) -> None:
        """What the run needs beyond a valid config, checked before anything is written: ``init_from``
        (and ``reference_from``) name weights sources of decoder-only language models whose context
        holds ``data.max_prompt_len + max_new_tokens`` tokens, with one tokenizer, and the data files
        exist. Raises ValueError (FileNotFoundError for a missing file)."""
        check_policy_sources(self, "GRPO", "GRPO starts from a policy (usually an SFT run)",
                             ("data.max_prompt_len + max_new_tokens", self.seq_len))
        configured_reward(self)
        for key in ("path", "test_path"):
            path = getattr(self.data, key)
            if path and not pathlib.Path(path).is_file():
                raise FileNotFoundError(f"data.{key}={path}: no such file; expected a GSM8K or chat file")


# ----------------------------------------------------------------------------------------- loss


def completion_logprobs(graphdef, params: dict, batch: dict, *, temperature: float = 1.0,
                        vocab_chunk: int = VOCAB_CHUNK) -> tuple[jax.Array, dict]:
    """Log-probs of each row's next tokens, ``(B, T)`` float32, under ``softmax(logits / temperature)``
    (no dropout), and the model's aux losses (MoE). ``batch``: ``inputs``, ``targets``,
    ``segment_ids`` (B, T), right-padded rows (prompt then completion)."""
    b, t = batch["inputs"].shape
    positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    lp, aux = forward_logprobs(nnx.merge(graphdef, params), batch["inputs"], batch["targets"], positions=positions,
                               segment_ids=batch["segment_ids"], vocab_chunk=vocab_chunk, temperature=temperature,
                               one_segment=True)
    return lp.logprobs.astype(jnp.float32), aux


def grpo_loss_fn(graphdef, reference_graphdef, model_cfg, *, beta: float = 0.0, epsilon_low: float = 0.2,
                 epsilon_high: float = 0.2, loss_type: str = "dapo", max_new_tokens: int | None = None,
                 temperature: float = 1.0, vocab_chunk: int = VOCAB_CHUNK, reference_is_base: bool = False,
                 importance_sampling_level: str = "token"):
    """``loss_fn(params, frozen, batch, rng)`` for the Trainer: :func:`grpo_loss` on a rollout batch
    (``inputs``, ``targets``, ``segment_ids``, ``mask`` (B, T); ``advantages`` (B,); ``old_logprobs``
    (B, T), the sampling policy's, when a rollout feeds several steps — without it the old log-probs
    are the current ones without gradient, ratio 1). With ``beta > 0`` the reference
    is ``frozen["reference"]`` through ``reference_graphdef`` or, with ``reference_is_base``, the
    policy's tree with its adapters zeroed. An MoE policy adds its router losses."""
    def loss_fn(params, frozen, batch, rng):
        del rng   # log-probs without dropout: those of the policy that sampled
        lp, aux = completion_logprobs(graphdef, params, batch, temperature=temperature, vocab_chunk=vocab_chunk)
        ref = None
        if beta > 0:
            if reference_is_base:
                ref, _ = completion_logprobs(graphdef, without_adapters(params), batch, temperature=temperature,
                                             vocab_chunk=vocab_chunk)
            else:
                ref, _ = completion_logprobs(reference_graphdef, frozen["reference"], batch, temperature=temperature,
                                             vocab_chunk=vocab_chunk)
            ref = jax.lax.stop_gradient(ref)
        old = batch["old_logprobs"] if "old_logprobs" in batch else jax.lax.stop_gradient(lp)
        loss, metrics = grpo_loss(lp, old, batch["advantages"], batch["mask"], ref_logprobs=ref,
                                  beta=beta, epsilon_low=epsilon_low, epsilon_high=epsilon_high, loss_type=loss_type,
                                  max_completion_length=max_new_tokens,
                                  importance_sampling_level=importance_sampling_level)
        if aux:
            loss = loss + model_cfg.moe_aux_loss * aux["moe_aux_loss"] + model_cfg.moe_z_loss * aux["moe_z_loss"]
            metrics = {**metrics, **aux}
        return loss, metrics
    return loss_fn


# -------------------------------------------------------------------------------------- rollouts


def rollout_batch(prompts: list[list[int]], completions: np.ndarray, lengths: np.ndarray, advantages: np.ndarray,
                  num_generations: int, seq_len: int, *, keep: np.ndarray | None = None,
                  per_token: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """A rollout as training rows: row ``r`` is prompt ``r // G`` then completion ``r``, right-padded to
    ``seq_len + 1`` tokens and shifted into ``inputs`` / ``targets`` (B, seq_len); ``mask`` is 1 on the
    targets that are completion tokens (rows where ``keep`` is False get none); ``segment_ids`` 1 on
    real inputs. ``per_token``: arrays laid out as ``completions`` (B, M), one value per completion
    token (the sampler's ``logprobs``, say), each placed on its token's target position as a float32
    (B, seq_len) array of its name, 0 elsewhere. Raises ValueError if a prompt and its completion
    exceed ``seq_len + 1`` tokens, or for a ``per_token`` array not shaped as ``completions`` (B, M) or
    named as one of the rows' own arrays."""
    rows = completions.shape[0]
    per_token = dict(per_token or {})
    clash = sorted(set(per_token) & {"inputs", "targets", "segment_ids", "mask", "advantages"})
    bad = [f"{k} {np.shape(v)}" for k, v in per_token.items() if np.ndim(v) != 2 or np.shape(v) != completions.shape]
    if clash or bad:
        raise ValueError(f"rollout_batch: per_token {', '.join(clash + bad)}; expected (B, M) = {completions.shape} "
                         f"arrays under names other than the rows' own")
    tokens = np.zeros((rows, seq_len + 1), np.int32)
    mask = np.zeros((rows, seq_len), np.float32)
    segment_ids = np.zeros((rows, seq_len), np.int32)
    placed = {k: np.zeros((rows, seq_len), np.float32) for k in per_token}
    for r in range(rows):
        p, n = prompts[r // num_generations], int(lengths[r])
        if len(p) + n > seq_len + 1:
            raise ValueError(f"rollout row {r}: {len(p)} prompt + {n} completion tokens exceed {seq_len + 1}")
        tokens[r, :len(p)], tokens[r, len(p):len(p) + n] = p, completions[r, :n]
        segment_ids[r, :len(p) + n - 1] = 1
        if keep is None or keep[r]:
            mask[r, len(p) - 1:len(p) + n - 1] = 1.0
        for k, v in per_token.items():
            placed[k][r, len(p) - 1:len(p) + n - 1] = v[r, :n]
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:], "segment_ids": segment_ids, "mask": mask,
            "advantages": np.asarray(advantages, np.float32), **placed}


class Rollouts(RolloutSource):
    """The loop's data iterator for GRPO: every ``num_iterations * steps_per_generation`` calls it samples
    one rollout from the trainer's current policy, grades it and returns its training rows
    (:func:`rollout_batch`): all of them at each call, or with ``steps_per_generation`` > 1 a share
    of them (:meth:`RolloutSource.batch`). Prompts are taken in a seeded order that changes every pass over the
    problems; rollout ``k`` is sampled with a seed of ``(seed, k)``. ``get_state`` / ``set_state`` (the
    rollouts drawn, the steps given of the last one and, between two of them, its rows; as bytes) let
    the trainer's checkpoints hold its position, as they hold a grain iterator's; :meth:`pop_metrics`
    gives the means of the rollouts' metrics since its last call (``Trainer.fit(host_metrics=...)``).

    ``old_logprobs(batch) -> (B, T)``, required when a rollout feeds several steps: the completion
    tokens' log-probs under the policy as it is now (the one that sampled), kept in the rows as
    ``old_logprobs``. Raises ValueError when it is missing."""

    def __init__(self, cfg: GRPOConfig, items: list[dict], prompts: list[list[int]], tok, template, make_sampler, *,
                 reward_fn: RewardFn | None = None, advantage_fn: AdvantageFn | None = None,
                 old_logprobs: Callable[[dict], np.ndarray] | None = None):
        super().__init__(cfg, items, prompts, tok, template, epochs=cfg.num_iterations,
                         mini_batches=cfg.steps_per_generation)
        if self.per_rollout > 1 and old_logprobs is None:
            named = ", ".join(f"{k}={v}" for k, v in (("num_iterations", cfg.num_iterations),
                                                       ("steps_per_generation", cfg.steps_per_generation)) if v > 1)
            raise ValueError(f"{named}: Rollouts needs old_logprobs, the sampling policy's log-probs of each rollout, "
                             f"to clip the later steps against")
        self.old_logprobs = old_logprobs
        self.reward_fn = reward_fn or grader(cfg.data)   # (task, completion, answer, **columns) -> reward
        self.make_sampler = make_sampler   # () -> Sampler over the policy as it is now
        # rewards (P * G,) -> (advantages (P * G,), metrics): GRPO's group advantages unless given (RLOO's, ...)
        self.advantage_fn = advantage_fn or (lambda r: group_advantages(jnp.asarray(r), cfg.num_generations,
                                                                        scale_rewards=cfg.scale_rewards))
        self.sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k,
                                       top_p=cfg.top_p, n=cfg.num_generations, stop_token_ids=self.stops)
        self.last_output = None      # the last rollout's SamplerOutput
        self.last: list[dict] = []   # the last rollout's completions: prompt index, text, reward

    def rollout(self, k: int) -> dict[str, np.ndarray]:
        """Rollout ``k``'s training rows (:func:`rollout_batch`, with ``old_logprobs`` when a rollout
        feeds several steps); its metrics go to :meth:`pop_metrics`, its completions to ``last``."""
        cfg, g = self.cfg, self.cfg.num_generations
        t0 = time.perf_counter()
        picked = self.order(k)
        prompts = [self.prompts[i] for i in picked]
        out = self.make_sampler().generate_ids(prompts, self.sampling, seed=self.seed(k))
        texts = [self.tok.decode([int(t) for t in out.tokens[r, :int(out.lengths[r])] if int(t) not in self.stops])
                 for r in range(len(prompts) * g)]
        rows = [self.items[picked[r // g]] for r in range(len(texts))]
        tasks = [it.get("task", "") for it in rows]
        rewards = score_completions(self.reward_fn, texts, rows, where=f"of rollout {k}")
        by_function = dict(getattr(self.reward_fn, "last", {}))   # several reward functions: each one's mean
        advantages, stats = self.advantage_fn(rewards)
        self.last_output = out
        truncated = np.asarray(out.finish_reason) == FINISH_LENGTH     # cut at max_new_tokens
        batch = rollout_batch(prompts, np.asarray(out.tokens), np.asarray(out.lengths), np.asarray(advantages), g,
                              cfg.seq_len, keep=~truncated if cfg.mask_truncated_completions else None)
        if self.per_rollout > 1:
            old = np.asarray(self.old_logprobs(batch), np.float32)
            if old.shape != batch["mask"].shape:
                raise ValueError(f"old_logprobs gave shape {old.shape} for rollout {k}; expected {batch['mask'].shape}")
            batch["old_logprobs"] = np.where(batch["mask"] > 0, old, 0.0).astype(np.float32)
        m = {k: float(v) for k, v in stats.items()}
        m["reward"] = float(rewards.mean())
        m.update(by_function)
        m["completions/mean_length"] = float(np.mean(out.lengths))
        m["completions/clipped_ratio"] = float(truncated.mean())
        if len(set(tasks)) > 1:
            for task in sorted(set(tasks)):
                m[f"reward/{task}"] = float(rewards[[t == task for t in tasks]].mean())
        m["perf/rollout_s"] = time.perf_counter() - t0
        self.record(m)
        self.last = [{"prompt": picked[r // g], "completion": texts[r], "reward": float(rewards[r])}
                     for r in range(len(texts))]
        return batch

    def shape(self) -> dict[str, int]:
        cfg = self.cfg
        return {"data.batch_size": cfg.data.batch_size, "num_generations": cfg.num_generations, "seq_len": cfg.seq_len,
                "num_iterations": cfg.num_iterations, "steps_per_generation": cfg.steps_per_generation}


# --------------------------------------------------------------------------------------- runner


def read_problems(cfg, template, *, need_answers: bool = True, reward_fn=None, task: str = "GRPO"
                  ) -> tuple[list[dict], list[list[int]], list[dict]]:
    """(train items, their prompt ids, held-out items) of a config with ``data`` (:class:`PromptDataConfig`)
    and ``synthetic_options``: the items whose prompt fits ``data.max_prompt_len`` and, with
    ``need_answers`` (rewards from the grader), that have a reference answer; what was left out is said.
    Raises ValueError when no training problem is left, naming ``file:line`` for a conversation answered
    through a tool (rollouts run none: ``lmforge.eval.chat.reference_tools``), for an answer the grader
    could never check (``lmforge.align.sft.check_graded``) or, given ``reward_fn``, for an item without
    a column the function requires (:func:`lmforge.align.rollouts.check_reward_columns`)."""
    from lmforge.eval.chat import prompt_messages, reference_tools

    train, test = read_items(cfg)
    kept, prompts, no_answer, long = [], [], 0, 0
    for it in train:
        if tools := reference_tools(it["messages"]):   # (synthetic tool tasks are refused by the config)
            raise ValueError(f"{it['where']}: the reference answer goes through the {'+'.join(tools)} tool, but "
                             f"{task}'s rollouts run no tools (a completion would be a bare call, never the "
                             f"answer); expected conversations answered in text")
        if need_answers and it.get("answer") is None:
            no_answer += 1
            continue
        if need_answers and (why := check_graded(it, cfg.data.match)) is not None:
            raise ValueError(why + ("" if it.get("task") in graded_tasks() else
                                    "; or score it with a reward function of your own (reward_fn=\"file.py:fn\")"))
        # One ending in a user turn as it is; a chat file's tools column shown as SFT trained it.
        ids = template.prompt(prompt_messages(it["messages"]), tools=it.get("tools") or None).tolist()
        if len(ids) > cfg.data.max_prompt_len:
            long += 1
            continue
        kept.append(it)
        prompts.append(ids)
    test = [it for it in test if it.get("answer") is not None or not need_answers]
    say(f"problems: {len(kept)} to train on" + (f" ({no_answer} without an answer left out)" if no_answer else "")
        + (f" ({long} with prompts over data.max_prompt_len={cfg.data.max_prompt_len} tokens left out)" if long else "")
        + f", {len(test)} held out")
    if not kept:
        raise ValueError(f"no training problem is left (of {len(train)}: "
                         + (f"{no_answer} without an answer, " if need_answers else "") + f"{long} with prompts over "
                         f"data.max_prompt_len={cfg.data.max_prompt_len} tokens); {task} needs "
                         + ("problems with checkable answers" if need_answers else "prompts"))
    if reward_fn is not None:
        check_reward_columns(reward_fn, kept)
    elif need_answers and (warning := check_references(kept, grader(cfg.data), cfg.data.match)) is not None:
        say(warning)
    return kept, prompts, test


def run_grpo(cfg: GRPOConfig, workdir: pathlib.Path, *, reward_fn: RewardFn | None = None) -> dict[str, float]:
    """Trains ``cfg.init_from`` by GRPO on verifiable problems; returns the final metrics (``final/...``).

    ``reward_fn(task, completion, answer, **columns) -> float`` scores each completion (the text
    without its stop id; TRL's ``reward_funcs``; the item's columns it accepts as keywords,
    ``lmforge.align.rollouts.score_completions``): this argument, else the function ``cfg.reward_fn``
    names (what an experiment file or a binding sets), else the task's grader (1.0 correct, 0.0 not).
    With a reward function of one's own, problems without an answer train too (it gets
    ``answer=None``). Held-out accuracy is always the grader's, over the held-out problems whose
    answers it can check.

    Raises ValueError for an ``init_from`` / ``reference_from`` that is no weights source or not a
    decoder language model, prompts and completions beyond the model's context, no problem with an
    answer, or a step's rows (``data.batch_size * num_generations / steps_per_generation``) that do not
    split over the mesh.
    """
    workdir, tok, template, t_start = start_run(cfg, workdir, "GRPO")
    if jax.process_count() > 1:
        raise ValueError(f"GRPO runs in one process for now ({jax.process_count()} started): each would sample the "
                         f"whole rollout and train on it as its own rows")
    from lmforge.eval.chat import chat_accuracy
    from lmforge.weights import load_params

    grade = grader(cfg.data)
    if reward_fn is None:
        reward_fn = configured_reward(cfg)
    by_grader = reward_fn is None
    reward_fn = reward_fn or grade
    train_items, train_prompts, test_items = read_problems(cfg, template, need_answers=by_grader,
                                                           reward_fn=None if by_grader else reward_fn)
    eval_bs = cfg.eval_batch_size or cfg.rows    # prompts per sampler call, which pads rows itself
    rows_name = "data.batch_size * num_generations" + (" / steps_per_generation" if cfg.steps_per_generation > 1
                                                       else "")
    check_rows(make_mesh(cfg.mesh), ((rows_name, cfg.step_rows, cfg.optim.grad_accum),))
    # prepare_policy checks its data.batch_size (and eval batch) against the mesh: here, the step's rows.
    shaped = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, batch_size=cfg.step_rows), eval_batch_size=0)
    mesh, _, alone, policy, optim = prepare_policy(shaped, workdir, tok)
    rules, model_cfg = cfg.mesh.rules, policy.cfg

    frozen, frozen_sh, reference = {}, {}, None
    if cfg.beta and not cfg.reference_is_base():
        reference = _load_reference(cfg, workdir, mesh, rules, policy if not alone else None, load_params)
        frozen, frozen_sh = {"reference": reference.params}, {"reference": reference.shardings}
    loss_fn = grpo_loss_fn(policy.graphdef, reference.graphdef if reference else None, model_cfg, beta=cfg.beta,
                           epsilon_low=cfg.epsilon, epsilon_high=cfg.epsilon_high or cfg.epsilon,
                           loss_type=cfg.loss_type, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                           vocab_chunk=cfg.vocab_chunk, reference_is_base=cfg.reference_is_base(),
                           importance_sampling_level=cfg.importance_sampling_level)
    trainer = Trainer(loss_fn, params=policy.params, param_shardings=policy.shardings, optim=optim, loop=cfg,
                      mesh=mesh, rules=rules, frozen=frozen, frozen_shardings=frozen_sh, model_cfg=model_cfg,
                      base=cfg.init_from, base_step=None if alone else policy.step, per_device=cfg.mesh.per_device_step)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(policy.params))
    ref_name = ("none (beta 0)" if not cfg.beta else "its own base (adapters off)" if cfg.reference_is_base()
                else (cfg.reference_from or cfg.init_from))
    say(f"model: {model_cfg.family} from {workdir if alone else cfg.init_from}, {n_params / 1e6:.2f}M parameters, "
        f"{trainer.num_trainable() / 1e6:.3f}M trainable" + (f" (LoRA rank {cfg.lora.rank})" if cfg.lora.rank else "")
        + f"; rewards from {reward_source(cfg, reward_fn, by_grader)}; reference {ref_name}; "
          f"{cfg.data.batch_size} prompts x {cfg.num_generations} completions a rollout"
        + (f", {cfg.steps_per_rollout} steps on each ({cfg.num_iterations} pass{'es' if cfg.num_iterations > 1 else ''}"
           f" x {cfg.steps_per_generation} of {cfg.step_rows} rows)" if cfg.steps_per_rollout > 1 else " and a step")
        + f", {cfg.loss_type} loss" + (", sequence-level ratios" if cfg.importance_sampling_level == "sequence" else "")
        + f"; mesh {dict(mesh.shape)}")
    check_reward_sources(cfg, workdir, say)

    make_sampler = lambda: Sampler(policy.graphdef, trainer.params, tok, model_cfg, mesh, rules)   # noqa: E731

    @jax.jit
    def policy_logprobs(params, batch):
        return completion_logprobs(policy.graphdef, params, batch, temperature=cfg.temperature,
                                   vocab_chunk=cfg.vocab_chunk)[0]

    def old_logprobs(batch: dict) -> np.ndarray:   # the sampling policy's, on the rollout's sharded rows
        rows = trainer.global_batch({k: batch[k] for k in ("inputs", "targets", "segment_ids")})
        with jax.set_mesh(mesh), axis_rules(rules):
            return np.asarray(jax.device_get(policy_logprobs(trainer.params, rows)))

    rollouts = Rollouts(cfg, train_items, train_prompts, tok, template, make_sampler, reward_fn=reward_fn,
                        old_logprobs=old_logprobs if cfg.steps_per_rollout > 1 else None)
    graded = held_out_graded(test_items, cfg.data.match, cfg.eval_generate) if by_grader else []
    greedy = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=0.0)
    last_samples: list[dict] = []

    asked = test_items[:cfg.eval_generate] if not by_grader else []   # replied to and scored by the reward function

    def evaluate(tr: Trainer) -> dict[str, float]:
        if by_grader:
            res = chat_accuracy(make_sampler(), template, graded, grade, sampling=greedy, seed=cfg.seed,
                                batch=eval_bs, progress=jax.process_index() == 0)
            last_samples[:] = res["samples"]
            return {f"eval/{k}": float(v) for k, v in res["metrics"].items()}
        return reward_eval(make_sampler(), template, asked, reward_fn, grade, cfg.data.match, greedy, cfg.seed,
                           eval_bs, last_samples)

    result = trainer.fit(rollouts, workdir, evaluate=evaluate if graded or asked else None,
                         on_eval=lambda step, m: say(f"step {step}: " + describe(m)), host_metrics=rollouts.pop_metrics)
    write_eval_samples(workdir, result.step, last_samples)
    out = final_metrics(result, trainer, t_start)
    out.update({k.replace("train/", "final/train_"): v for k, v in result.train.items()
                if k in ("train/reward", "train/completions/mean_length")})
    return out


def describe(m: dict) -> str:
    """``held-out accuracy 0.235 of 200 (arithmetic 0.240, letter_count 0.230)``, after ``held-out
    reward 0.412 over 100`` beside a reward function of one's own."""
    parts = []
    if "eval/reward" in m:
        parts.append(f"held-out reward {m['eval/reward']:.3f} over {int(m.get('eval/reward_n', 0))}")
    if "eval/accuracy" in m:
        tasks = [f"{k[len('eval/accuracy/'):]} {v:.3f}" for k, v in m.items() if k.startswith("eval/accuracy/")]
        parts.append(f"held-out accuracy {m['eval/accuracy']:.3f} of {int(m.get('eval/n', 0))}"
                     + (f" ({', '.join(tasks)})" if tasks else ""))
    return ", ".join(parts) or "no held-out problems"


__all__ = ["GRPOConfig", "PromptDataConfig", "Rollouts", "completion_logprobs", "grpo_loss_fn", "read_problems",
           "rollout_batch", "run_grpo"]
