"""RLHF with PPO and a KL penalty: the config and the runner behind ``lmforge run experiments/align/ppo_*.py``.

A policy (``init_from``: usually an SFT run) answers prompts; a reward model (``reward_from``: a run of
``lmforge.align.reward``) scores each whole completion; a value model (the critic, ``value_from``:
by default a copy of the reward model) estimates, token by token, the reward still to come; and
Proximal Policy Optimization (Schulman et al. 2017) raises the reward while a per-token KL penalty
to a frozen reference (the starting policy) keeps the policy close to it — InstructGPT's RLHF
(Ouyang et al. 2022, "Training language models to follow instructions with human feedback",
sec. 3.5, eq. 2; Stiennon et al. 2020, "Learning to summarize from human feedback"), as TRL's
``PPOTrainer`` runs it (Huang et al. 2024, "The N+ Implementation Details of RLHF with PPO"):

- Rollout (:class:`PPORollouts`): ``data.batch_size`` prompts, one completion each, sampled by the one
  sampler (``lmforge.infer.Sampler``) at ``temperature`` from the policy as it is, ending at the
  template's end-of-turn id or at ``max_new_tokens``. Then, a mini-batch of rows at a time: the tokens'
  log-probs under the policy (``softmax(logits / temperature)``, no dropout) and under the reference,
  and the value model's value at every position; and the reward model's score of each conversation
  (prompt and reply) rendered as it was trained on it (end of turn, then eos:
  ``lmforge.data.preference.conversation_rows``) and read at its last token. A completion cut at
  ``max_new_tokens`` is scored as if it had ended there; ``missing_eos_penalty`` is taken off its score.
  A rollout is one turn and runs no tools, so a synthetic task answered through a tool (``calculator``)
  is refused by the config check (``PromptDataConfig``, shared with GRPO).
- Rewards per completion token: ``-kl_coef * kl_t`` (``kl_estimator``: k1 ``logp - ref_logp``, or k3),
  plus the score on the last token; ``whiten_rewards`` optionally. Advantages by GAE (``gamma``,
  ``lam``: ``lmforge.train.objectives.gae_advantages``), whitened over the rollout's tokens; returns =
  advantages + values.
- Updates: ``num_ppo_epochs`` passes over the rollout, each in ``num_mini_batches`` shuffled
  mini-batches, one optimizer step each, on ``lmforge.train.objectives.ppo_loss``: the clipped
  surrogate (``cliprange``) plus ``vf_coef`` times the clipped value loss (``cliprange_value``). The
  policy and the value model are one trainable tree on the one trainer (the value model under the key
  ``critic``, TRL's ``PolicyAndValueWrapper``) with one optimizer; ``steps`` counts optimizer steps.
- Without a reward model (``reward_from=""``) the scores come from the task's grader on verifiable
  problems (``lmforge.align.sft.grader``, a file's ``answer`` column included), or from a function of
  one's own (``reward_fn="file.py:fn"``, given the record's columns it declares), as in GRPO, and
  the value model starts from the policy with a fresh score head.
- Logged beside the loss's TRL metrics (``loss/policy``, ``loss/value``, ``policy/approxkl``,
  ``policy/clipfrac``, ``val/clipfrac``, ``val/ratio``, ``val/vpred``): TRL's ``objective/kl``,
  ``objective/entropy`` (the sampled tokens' summed negative log-probs), ``objective/non_score_reward``,
  ``objective/rlhf_reward``, ``objective/scores``, and ``completions/mean_length``,
  ``completions/clipped_ratio``, ``perf/rollout_s``, means over the rollouts since the last log.
- Evaluation (``eval_on_start``, ``eval_every``, the end): greedy replies to ``eval_generate`` held-out
  prompts, scored the same way: ``eval/score`` (the reward model's mean score) or, with a grader,
  ``eval/accuracy``, or with a reward function of one's own its ``eval/reward`` and the grader's
  ``eval/accuracy`` where it can check the answer (``lmforge.align.rollouts.reward_eval``); the last
  replies go to ``eval_samples.jsonl``.
- Checkpoints hold the policy and the value model, the optimizer, and the rollouts' position with
  the rollout being trained on (its rows, log-probs, values and advantages), so a run resumed
  between two mini-batches of a rollout continues bit for bit. The run folder is the policy's
  weights source (``lmforge.weights.load_params`` passes over the ``critic`` leaves).

Where it differs from TRL: TRL places the score one position past the completion's end-of-turn token
(a padding target, whose value estimate — read from the end-of-turn token's hidden state — enters
the value loss); here the score sits on the completion's last token and the value loss covers the
completion's tokens alone. TRL's reward model reads the sampled ids; here it reads the reply's text
rendered by the chat template (the ids the reward model was trained on). The reward model and the
reference are read at the steps recorded at the first start (``reward.json``, ``reference.json``). Not built: several completions per prompt, rollouts
split over processes (a run with several processes is refused), a value head sharing the policy's
trunk.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lmforge.align.common import (PolicyAndReference, check_policy_sources, check_rows, final_metrics, load_recorded,
                                  prepare_policy, raise_problems, same_tokenizer, say, start_run, whole,
                                  write_eval_samples)
from lmforge.align.dpo import _load_reference, without_adapters
from lmforge.align.grpo import PromptDataConfig, RewardFn, completion_logprobs, read_problems, rollout_batch
from lmforge.align.grpo import describe as describe_graded
from lmforge.align.rollouts import (check_reward_sources, configured_reward, reward_eval, reward_source,
                                    score_completions)
from lmforge.align.rollouts import RolloutSource
from lmforge.align.sft import grader, held_out_graded
from lmforge.infer import Sampler, SamplingConfig
from lmforge.infer.sampler import FINISH_LENGTH
from lmforge.model import LoRAConfig, ModelRuntime, axis_rules
from lmforge.model.logprobs import VOCAB_CHUNK, check_vocab_chunk
from lmforge.model.lora import ADAPTER_PATTERN
from lmforge.model.paths import compile_patterns, matches
from lmforge.train import distributed
from lmforge.train.mesh import MeshConfig, make_mesh
from lmforge.train.objectives import (KL_ESTIMATORS, gae_advantages, kl_penalty, masked_whiten, ppo_loss)
from lmforge.train.optim import OptimConfig
from lmforge.train.trainer import LoopConfig, Trainer
from lmforge.weights.load import BESIDE_MODEL

CRITIC = BESIDE_MODEL[0]                           # the value model's key in the trainable tree
CRITIC_PATTERN = CRITIC + r"\..*"                  # its leaves, for optim.trainable
ROLLOUT_KEYS = ("inputs", "targets", "segment_ids", "mask", "logprobs", "values", "advantages", "returns")


@dataclasses.dataclass(frozen=True)
class PPOConfig(PolicyAndReference, LoopConfig):
    """The loop's fields (steps: optimizer steps, seed, log_every, eval_every, checkpoint_every, ...) come
    from LoopConfig."""
    init_from: str = ""              # the starting policy: a run folder, a model folder or a transformers folder
    reference_from: str = ""         # the KL's frozen reference; "" → the starting policy (under LoRA: its base)
    reward_from: str = ""            # a reward model (a score head of 1); "" → the task's grader (verifiable problems)
    reward_fn: str = ""              # without reward_from: "file.py:fn" or "module:fn" (load_reward_fn); "" → the grader
    reward_funcs: tuple[tuple[str, float], ...] = ()   # without reward_from: (spec, weight) pairs summed, as in GRPO
    value_from: str = ""             # the value model's start; "" → reward_from, or init_from with a fresh score head
    data: PromptDataConfig = PromptDataConfig(synthetic=(("arithmetic", 1.0),))   # batch_size: prompts per rollout
    num_ppo_epochs: int = 4          # passes over each rollout
    num_mini_batches: int = 1        # optimizer steps per pass (each on data.batch_size / num_mini_batches rows)
    max_new_tokens: int = 64         # completion tokens at most (TRL's response_length)
    temperature: float = 0.7         # > 0: rollouts are sampled, and the log-probs are of softmax(logits / T)
    kl_coef: float = 0.05            # the KL penalty's weight in the per-token reward
    kl_estimator: str = "k1"         # KL_ESTIMATORS
    cliprange: float = 0.2           # the policy ratio's clip range
    vf_coef: float = 0.1             # the value loss's weight
    cliprange_value: float = 0.2     # the value's clip range around its rollout estimate
    gamma: float = 1.0               # GAE's discount
    lam: float = 0.95                # GAE's lambda
    whiten_rewards: bool = False     # whiten the per-token rewards over the rollout (mean kept)
    missing_eos_penalty: float = 0.0   # taken off the score of a completion cut at max_new_tokens; 0 → off
    # no gradient clipping, as TRL's PPOTrainer (it would clip the policy's and the value's gradients together)
    optim: OptimConfig = OptimConfig(lr=3e-6, min_lr=3e-7, warmup_steps=0, weight_decay=0.0, grad_clip=0.0)
    lora: LoRAConfig = LoRAConfig()  # rank > 0: the policy trains low-rank adapters (the value model trains whole)
    model: ModelRuntime = ModelRuntime()   # how the loaded policy computes ("": the source's)
    mesh: MeshConfig = MeshConfig()
    distributed: distributed.DistributedConfig = distributed.DistributedConfig()
    synthetic_options: tuple[tuple[str, str | int | float], ...] = ()   # (option, value): synthetic.OPTIONS
    eval_on_start: bool = True       # score the starting policy at step 0: the number RL must beat
    eval_generate: int = 100         # held-out prompts replied to (greedy) at each eval; 0 → none
    vocab_chunk: int = VOCAB_CHUNK   # the loss's logits, columns at a time (recomputed backward); 0 → all V at once

    def __post_init__(self):
        super().__post_init__()
        check_vocab_chunk(self.vocab_chunk)
        counts = ("num_ppo_epochs", "num_mini_batches", "max_new_tokens")
        problems = [msg for bad, msg in (
            *((not whole(getattr(self, k)) or getattr(self, k) < 1, f"{k}={getattr(self, k)!r}: expected a whole "
                                                                    f"number >= 1") for k in counts),
            (whole(self.num_mini_batches) and self.num_mini_batches >= 1 and self.data.batch_size % self.num_mini_batches,
             f"data.batch_size={self.data.batch_size} does not split into num_mini_batches={self.num_mini_batches}"),
            (not self.temperature > 0, f"temperature={self.temperature}: expected > 0 (rollouts are sampled)"),
            (self.kl_estimator not in KL_ESTIMATORS,
             f"kl_estimator={self.kl_estimator!r}: expected one of {', '.join(KL_ESTIMATORS)}"),
            *((not getattr(self, k) >= 0, f"{k}={getattr(self, k)}: expected >= 0")
              for k in ("kl_coef", "cliprange", "vf_coef", "cliprange_value", "missing_eos_penalty")),
            (not (0 <= self.gamma <= 1 and 0 <= self.lam <= 1),
             f"gamma={self.gamma}, lam={self.lam}: expected each in [0, 1]"),
            (self.reference_from and not self.kl_coef,
             f"reference_from={self.reference_from} is read only with kl_coef > 0 (the KL penalty); kl_coef is 0"),
            (self.kl_coef and self.reference_is_base() and self.optim.trainable not in ((), (ADAPTER_PATTERN,)),
             f"optim.trainable={self.optim.trainable} trains more of the policy than its LoRA adapters, but the "
             f"reference is the adapters' base (it would move with them); set reference_from to load a frozen one"),
            (self.prefetch, f"prefetch={self.prefetch}: a rollout is sampled from the weights of the step before "
                            f"it, so it cannot be prepared ahead; expected 0"),
            (not whole(self.eval_generate), f"eval_generate={self.eval_generate!r}: expected a whole number >= 0"),
        ) if bad]
        raise_problems(problems, self)

    @property
    def mini_batch_size(self) -> int:
        """Rows per optimizer step: ``data.batch_size / num_mini_batches``."""
        return self.data.batch_size // self.num_mini_batches

    @property
    def seq_len(self) -> int:
        """The rows' width: the longest prompt and completion."""
        return self.data.max_prompt_len + self.max_new_tokens

    def check_runnable(self, workdir: pathlib.Path | None = None) -> None:
        """What the run needs beyond a valid config, checked before anything is written: ``init_from``
        (and ``reference_from``) name decoder-only language models, ``reward_from`` (and ``value_from``)
        decoder-only models, each taking ``data.max_prompt_len + max_new_tokens`` tokens, all with one
        tokenizer; ``reward_from`` has a score head of one output; the data files exist. Raises
        ValueError (FileNotFoundError for a missing file)."""
        from lmforge.weights import check_init_from, source_model_config

        length = ("data.max_prompt_len + max_new_tokens", self.seq_len)
        check_policy_sources(self, "PPO", "PPO starts from a policy (usually an SFT run)", length)
        for key in ("reward_from", "value_from"):
            source = getattr(self, key)
            if not source:
                continue
            check_init_from(source, "the reward model" if key == "reward_from" else "the value model's start", key)
            model_cfg = source_model_config(source)
            if model_cfg.architecture != "decoder":
                raise ValueError(f"{key}={source} is a {model_cfg.family} ({model_cfg.architecture}) model; expected a "
                                 f"decoder-only model")
            if key == "reward_from" and model_cfg.num_labels != 1:
                raise ValueError(f"reward_from={source} is {'a language model' if not model_cfg.num_labels else f'a model of {model_cfg.num_labels} scores'}; "
                                 f"expected a reward model (a score head of one output: a run of lmforge.align.reward)")
            if model_cfg.num_labels > 1:
                raise ValueError(f"{key}={source} has a score head of {model_cfg.num_labels} outputs; expected one")
            if self.seq_len > model_cfg.max_seq_len:
                raise ValueError(f"{length[0]}={self.seq_len} exceeds the max_seq_len={model_cfg.max_seq_len} of "
                                 f"{key}={source}'s model")
            if not same_tokenizer(self.init_from, source):
                raise ValueError(f"{key}={source} has another tokenizer than init_from={self.init_from}; expected one "
                                 f"tokenizer for both (it reads the policy's token ids)")
        for key in ("path", "test_path"):
            path = getattr(self.data, key)
            if path and not pathlib.Path(path).is_file():
                raise FileNotFoundError(f"data.{key}={path}: no such file")
        if (self.reward_fn or self.reward_funcs) and self.reward_from:
            named = f"reward_fn={self.reward_fn!r}" if self.reward_fn else f"reward_funcs={self.reward_funcs!r}"
            raise ValueError(f"{named} and reward_from={self.reward_from} are both set; expected one source of scores")
        configured_reward(self)


# ----------------------------------------------------------------------------------------- loss


def token_values(graphdef, params: dict, batch: dict) -> tuple[jax.Array, dict]:
    """A value model's estimate at every position: the score head ``(D, 1)`` on each final hidden state
    of ``batch["inputs"]`` (B, T), right-padded (``segment_ids`` 0 on padding) → ``(B, T)`` float32 (the
    value before ``targets[:, t]`` is drawn), and the model's aux losses (MoE). No dropout. Raises ValueError
    for a model without a score head of one output."""
    model = nnx.merge(graphdef, params)
    if model.score is None or model.score[...].shape[-1] != 1:
        raise ValueError(f"token_values: the value model needs a score head of one output (D, 1); it has "
                         f"{'none (a language model)' if model.score is None else tuple(model.score[...].shape)}")
    b, t = batch["inputs"].shape
    positions = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
    hidden, _, aux = model.hidden_states(batch["inputs"], positions=positions, segment_ids=batch["segment_ids"],
                                         one_segment=True)
    values = jnp.matmul(hidden, model.score[...].astype(hidden.dtype), preferred_element_type=jnp.float32)
    return values[..., 0], aux


def split_critic(params: dict) -> tuple[dict, dict]:
    """(the policy's tree, the value model's) from the trainable tree ``{**policy, "critic": value}``."""
    return {k: v for k, v in params.items() if k != CRITIC}, params[CRITIC]


def ppo_loss_fn(graphdef, critic_graphdef, model_cfg, critic_cfg, *, cliprange: float = 0.2,
                cliprange_value: float = 0.2, vf_coef: float = 0.1, temperature: float = 1.0,
                vocab_chunk: int = VOCAB_CHUNK):
    """``loss_fn(params, frozen, batch, rng)`` for the Trainer: :func:`ppo_loss` on a mini-batch of a
    rollout (``inputs``, ``targets``, ``segment_ids``, ``mask``, and the rollout's ``logprobs``,
    ``values``, ``advantages``, ``returns``, each (B, T)); ``params`` is ``{**policy, "critic": value
    model}``. An MoE policy or value model adds its router losses."""
    def loss_fn(params, frozen, batch, rng):
        del frozen, rng   # no dropout: the log-probs are those of the policy that sampled
        policy, critic = split_critic(params)
        lp, aux = completion_logprobs(graphdef, policy, batch, temperature=temperature, vocab_chunk=vocab_chunk)
        values, critic_aux = token_values(critic_graphdef, critic, batch)
        loss, metrics = ppo_loss(lp, batch["logprobs"], batch["advantages"], values, batch["values"],
                                 batch["returns"], batch["mask"], cliprange=cliprange,
                                 cliprange_value=cliprange_value, vf_coef=vf_coef)
        for cfg, a, name in ((model_cfg, aux, ""), (critic_cfg, critic_aux, "critic/")):
            if a:
                loss = loss + cfg.moe_aux_loss * a["moe_aux_loss"] + cfg.moe_z_loss * a["moe_z_loss"]
                metrics = {**metrics, **{name + k: v for k, v in a.items()}}
        return loss, metrics
    return loss_fn


def rollout_advantages(logprobs: np.ndarray, ref_logprobs: np.ndarray, values: np.ndarray, scores: np.ndarray,
                       mask: np.ndarray, *, kl_coef: float, kl_estimator: str = "k1", gamma: float = 1.0,
                       lam: float = 0.95, whiten_rewards: bool = False) -> dict[str, np.ndarray]:
    """A rollout's per-token rewards, advantages and returns, as TRL's ``PPOTrainer`` computes them before
    its updates: ``rewards = -kl_coef * kl`` on every completion token plus ``scores`` on each row's last
    one (optionally whitened, mean kept), GAE (:func:`gae_advantages`), advantages whitened over the
    rollout's tokens. ``logprobs``, ``ref_logprobs``, ``values``, ``mask`` (B, T) (a row's completion:
    consecutive positions), ``scores`` (B,). Returns ``kl``, ``rewards``, ``advantages``, ``returns``,
    ``values`` (masked), each (B, T) float32."""
    m = (np.asarray(mask) > 0)
    kl = np.where(m, np.asarray(kl_penalty(jnp.asarray(logprobs), jnp.asarray(ref_logprobs), kl_estimator)), 0.0)
    rewards = -kl_coef * kl
    has = m.any(-1)
    last = m.shape[1] - 1 - np.argmax(m[:, ::-1], axis=-1)                       # each row's last completion token
    rows = np.nonzero(has)[0]
    rewards[rows, last[rows]] += np.asarray(scores, np.float32)[rows]
    if whiten_rewards:
        rewards = np.where(m, np.asarray(masked_whiten(jnp.asarray(rewards), jnp.asarray(m), shift_mean=False)), 0.0)
    v = np.where(m, np.asarray(values, np.float32), 0.0)
    adv, ret = gae_advantages(jnp.asarray(rewards), jnp.asarray(v), jnp.asarray(m), gamma=gamma, lam=lam)
    adv = np.where(m, np.asarray(masked_whiten(adv, jnp.asarray(m))), 0.0)
    f32 = lambda x: np.asarray(x, np.float32)                                      # noqa: E731
    return {"kl": f32(kl), "rewards": f32(rewards), "advantages": f32(adv), "returns": f32(ret), "values": f32(v)}


# -------------------------------------------------------------------------------------- rollouts


Scorer = Callable[[list[str], list[dict]], np.ndarray]   # (completion texts, their items) -> scores (B,)
# the rollout's rows (all data.batch_size) -> {"logprobs", "values", and "ref_logprobs" unless kl_coef is 0} (B, T)
RolloutFn = Callable[[dict], dict]


def sample_rows(sampler, tok, prompts: list[list[int]], sampling: SamplingConfig, seed: int, seq_len: int
                ) -> tuple[dict, np.ndarray, list[str], np.ndarray]:
    """``sampling.n`` completions of each prompt by ``sampler`` (B = prompts x n rows, a prompt's
    completions adjacent): (rows — ``inputs``, ``targets``, ``segment_ids``, ``mask`` (B, seq_len) of
    :func:`lmforge.align.grpo.rollout_batch` —, the completions' lengths (B,) with their stop id, their
    texts without it (``sampling.stop_token_ids``), and whether each was cut at ``max_new_tokens`` (B,)
    bool)."""
    out = sampler.generate_ids(prompts, sampling, seed=seed)
    tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
    stops = set(sampling.stop_token_ids)
    texts = [tok.decode([int(t) for t in tokens[r, :int(lengths[r])] if int(t) not in stops])
             for r in range(len(tokens))]
    rows = rollout_batch(prompts, tokens, lengths, np.zeros(len(tokens), np.float32), sampling.n, seq_len)
    return ({k: rows[k] for k in ("inputs", "targets", "segment_ids", "mask")}, lengths, texts,
            np.asarray(out.finish_reason) == FINISH_LENGTH)


class PPORollouts(RolloutSource):
    """The loop's data iterator for PPO: every ``num_ppo_epochs * num_mini_batches`` calls it samples a
    rollout from the trainer's current policy (``make_sampler``), scores it (``score``: the reward model
    or a grader), evaluates it (``evaluate``: log-probs, reference log-probs, values under the weights
    now), turns it into advantages (:func:`rollout_advantages`), then gives its rows back a mini-batch at
    a time, shuffled afresh each epoch. Rollout ``k``'s prompts follow from ``(data.seed, k)``, its
    sampling seed and shuffles from ``(seed, k)`` (:class:`lmforge.align.rollouts.RolloutSource`).
    ``get_state`` / ``set_state`` hold the rollouts drawn, the mini-batches given of the last one and
    that rollout's arrays, so a checkpoint taken between two mini-batches resumes exactly; a state
    written under another ``data.batch_size``, ``seq_len``, ``num_ppo_epochs`` or ``num_mini_batches``
    is refused in one line."""

    def __init__(self, cfg: PPOConfig, items: list[dict], prompts: list[list[int]], tok, template, make_sampler,
                 evaluate: RolloutFn, score: Scorer):
        super().__init__(cfg, items, prompts, tok, template, epochs=cfg.num_ppo_epochs, mini_batches=cfg.num_mini_batches)
        self.make_sampler, self.evaluate, self.score = make_sampler, evaluate, score
        self.sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                       stop_token_ids=self.stops)

    def rollout(self, k: int) -> dict[str, np.ndarray]:
        """Rollout ``k``: sampled, scored, evaluated, with advantages and returns (``ROLLOUT_KEYS``, each
        (B, seq_len)); its metrics are kept for :meth:`pop_metrics`."""
        cfg = self.cfg
        t0 = time.perf_counter()
        picked = self.order(k)
        rows, lengths, texts, truncated = sample_rows(self.make_sampler(), self.tok, [self.prompts[i] for i in picked],
                                                      self.sampling, self.seed(k), cfg.seq_len)
        scores = np.asarray(self.score(texts, [self.items[i] for i in picked]), np.float32)
        if scores.shape != (len(picked),) or not np.isfinite(scores).all():
            raise ValueError(f"rollout {k}: the scores {scores[:4]}... are not {len(picked)} finite numbers")
        scores = scores - cfg.missing_eos_penalty * truncated
        ev = {key: np.asarray(v, np.float32) for key, v in self.evaluate(rows).items()}
        a = rollout_advantages(ev["logprobs"], ev.get("ref_logprobs", ev["logprobs"]), ev["values"], scores, rows["mask"],
                               kl_coef=cfg.kl_coef, kl_estimator=cfg.kl_estimator, gamma=cfg.gamma, lam=cfg.lam,
                               whiten_rewards=cfg.whiten_rewards)
        m = rows["mask"] > 0
        non_score = (-cfg.kl_coef * a["kl"]).sum(-1).mean()
        metrics = {"objective/kl": float(a["kl"].sum(-1).mean()),
                   "objective/entropy": float(np.where(m, -ev["logprobs"], 0.0).sum(-1).mean()),
                   "objective/non_score_reward": float(non_score),
                   "objective/rlhf_reward": float(non_score + scores.mean()),
                   "objective/scores": float(scores.mean()),
                   "completions/mean_length": float(lengths.mean()),
                   "completions/clipped_ratio": float(truncated.mean())}
        tasks = [self.items[i].get("task", "") for i in picked]
        if len(set(tasks)) > 1:
            for task in sorted(set(tasks)):
                metrics[f"objective/scores/{task}"] = float(scores[[t == task for t in tasks]].mean())
        metrics.update(getattr(self.score, "last_metrics", dict)())   # several reward functions: each one's mean
        metrics["perf/rollout_s"] = time.perf_counter() - t0
        self.record(metrics)
        return {**rows, "logprobs": np.where(m, ev["logprobs"], 0.0).astype(np.float32), "values": a["values"],
                "advantages": a["advantages"], "returns": a["returns"]}

    def shape(self) -> dict[str, int]:
        cfg = self.cfg
        return {"data.batch_size": cfg.data.batch_size, "seq_len": cfg.seq_len, "num_ppo_epochs": cfg.num_ppo_epochs,
                "num_mini_batches": cfg.num_mini_batches}


# --------------------------------------------------------------------------------------- runner


def reward_model_scorer(reward, template, seq_len: int, mesh, rules, rows: int) -> Scorer:
    """Scores from a reward model (``lmforge.weights.LoadedModel`` with a score head): each conversation —
    the item's prompt and the completion as the assistant's reply — rendered as the reward model was
    trained on it (``lmforge.data.preference.conversation_rows``: end of turn, then eos; its last
    ``seq_len`` tokens) and read at its last token (``lmforge.align.reward.sequence_rewards``), ``rows``
    conversations a call. A completion cut at ``max_new_tokens`` is scored as if it had ended there
    (``missing_eos_penalty`` lowers it)."""
    from lmforge.align.reward import sequence_rewards
    from lmforge.data.preference import conversation_rows
    from lmforge.eval.chat import prompt_messages
    from lmforge.train.step import global_batch

    scores_fn = jax.jit(lambda p, tokens, segment_ids: sequence_rewards(reward.graphdef, p, tokens, segment_ids)[0])

    def score(texts, items):
        convs = [prompt_messages(it["messages"]) + [{"role": "assistant", "content": text}]
                 for text, it in zip(texts, items)]
        out = []
        for k in range(0, len(convs), rows):
            chunk = convs[k:k + rows]
            batch = conversation_rows(chunk + [chunk[-1]] * (rows - len(chunk)), template, seq_len)
            g = global_batch(batch, mesh, rules)
            with jax.set_mesh(mesh), axis_rules(rules):
                out.append(np.asarray(jax.device_get(scores_fn(reward.params, g["tokens"], g["segment_ids"])))[:len(chunk)])
        return np.concatenate(out).astype(np.float32)
    return score


def grader_scorer(reward_fn: RewardFn) -> Scorer:
    """Scores from ``reward_fn(task, completion text, reference answer, **columns)``, one per completion
    (``lmforge.align.rollouts.score_completions``). Raises ValueError for a score that is not a finite
    number, or an exception of the function, in one line."""
    def score(texts, items):
        return score_completions(reward_fn, texts, items)
    score.last_metrics = lambda: dict(getattr(reward_fn, "last", {}))   # several functions: each one's mean
    return score


def run_ppo(cfg: PPOConfig, workdir: pathlib.Path, *, reward_fn: RewardFn | None = None) -> dict[str, float]:
    """Trains ``cfg.init_from`` by PPO against ``cfg.reward_from`` (or, without one, ``reward_fn`` on
    verifiable problems); returns the final metrics (``final/...``).

    ``reward_fn(task, completion, answer, **columns) -> float`` scores each completion when there is no reward
    model (the text without its stop id): this argument, else the function ``cfg.reward_fn`` names,
    else the task's grader; with one's own, problems without an answer train too. Held-out accuracy is
    always the grader's.

    Raises ValueError for a source that is no weights source or not a decoder, a reward model without
    one score, sources with other tokenizers, prompts and completions beyond a model's context, no
    prompt left, or mini-batches that do not split over the mesh.
    """
    workdir, tok, template, t_start = start_run(cfg, workdir, "PPO")
    if jax.process_count() > 1:
        raise ValueError(f"PPO runs in one process for now ({jax.process_count()} started): each would sample the "
                         f"whole rollout and train on it as its own rows")
    from lmforge.eval.chat import chat_accuracy, prompt_messages
    from lmforge.weights import load_params

    grade = grader(cfg.data)
    if reward_fn is None:
        reward_fn = configured_reward(cfg)
    by_grader = reward_fn is None and not cfg.reward_from
    reward_fn = reward_fn or grade
    items, prompts, test_items = read_problems(cfg, template, need_answers=by_grader,
                                               reward_fn=None if by_grader or cfg.reward_from else reward_fn,
                                               task="PPO")
    mesh = make_mesh(cfg.mesh)
    check_rows(mesh, (("data.batch_size / num_mini_batches", cfg.mini_batch_size, cfg.optim.grad_accum),))
    # prepare_policy checks its data.batch_size against the mesh: here, a mini-batch's rows.
    shaped = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, batch_size=cfg.mini_batch_size))
    mesh, _, alone, policy, optim = prepare_policy(shaped, workdir, tok)
    rules, rows = cfg.mesh.rules, cfg.mini_batch_size   # the rollout's forward passes go a mini-batch at a time

    reward = None
    if cfg.reward_from:   # at the step recorded at the first start, as the reference
        reward = load_recorded(cfg.reward_from, workdir / "reward.json", mesh, rules, cfg.model, what="reward model")
    value_source = cfg.value_from or cfg.reward_from or (workdir if alone else cfg.init_from)
    if reward is not None and value_source == cfg.reward_from:
        critic = dataclasses.replace(reward, params=jax.tree.map(jnp.copy, reward.params))   # trained: its own buffers
    else:
        critic = load_params(value_source, mesh, rules=rules, runtime=cfg.model, num_labels=1, seed=cfg.seed)
    frozen, frozen_sh, reference = {}, {}, None
    if cfg.kl_coef and not cfg.reference_is_base():
        reference = _load_reference(cfg, workdir, mesh, rules, policy if not alone else None, load_params)
        frozen, frozen_sh = {"reference": reference.params}, {"reference": reference.shardings}

    if optim.trainable and not matches(f"{CRITIC}.x", compile_patterns(optim.trainable, "optim.trainable")):
        optim = dataclasses.replace(optim, trainable=(*optim.trainable, CRITIC_PATTERN))   # the value model trains whole
    loss_fn = ppo_loss_fn(policy.graphdef, critic.graphdef, policy.cfg, critic.cfg, cliprange=cfg.cliprange,
                          cliprange_value=cfg.cliprange_value, vf_coef=cfg.vf_coef, temperature=cfg.temperature,
                          vocab_chunk=cfg.vocab_chunk)
    # The Trainer copies the trainable leaves a frozen tree shares (a reference loaded from the same source).
    trainer = Trainer(loss_fn, params={**policy.params, CRITIC: critic.params}, optim=optim, loop=cfg, mesh=mesh,
                      param_shardings={**policy.shardings, CRITIC: critic.shardings}, rules=rules, frozen=frozen,
                      frozen_shardings=frozen_sh, model_cfg=policy.cfg, base=cfg.init_from,
                      base_step=None if alone else policy.step, per_device=cfg.mesh.per_device_step)
    n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(policy.params))
    ref_name = ("none (kl_coef 0)" if not cfg.kl_coef else "its own base (adapters off)" if cfg.reference_is_base()
                else (cfg.reference_from or cfg.init_from))
    say(f"model: {policy.cfg.family} from {workdir if alone else cfg.init_from}, {n_params / 1e6:.2f}M parameters; "
        f"value model from {value_source}; {trainer.num_trainable() / 1e6:.3f}M trainable in all"
        + (f" (policy: LoRA rank {cfg.lora.rank})" if cfg.lora.rank else "")
        + f"; rewards from {cfg.reward_from or reward_source(cfg, reward_fn, by_grader)}; reference {ref_name}; {cfg.data.batch_size} "
        f"prompts a rollout, {cfg.num_ppo_epochs} epochs x {cfg.num_mini_batches} mini-batches; mesh {dict(mesh.shape)}")
    check_reward_sources(cfg, workdir, say)

    @jax.jit
    def evaluate_rows(params, frozen, batch):
        pol, crit = split_critic(params)
        lp, _ = completion_logprobs(policy.graphdef, pol, batch, temperature=cfg.temperature,
                                    vocab_chunk=cfg.vocab_chunk)
        if not cfg.kl_coef:
            ref = lp
        else:
            graphdef, ref_params = ((policy.graphdef, without_adapters(pol)) if cfg.reference_is_base()
                                    else (reference.graphdef, frozen["reference"]))
            ref, _ = completion_logprobs(graphdef, ref_params, batch, temperature=cfg.temperature,
                                         vocab_chunk=cfg.vocab_chunk)
        values, _ = token_values(critic.graphdef, crit, batch)
        return {"logprobs": lp, "ref_logprobs": ref, "values": values}

    def evaluate(batch):   # a mini-batch's rows at a time: the train step's shape, no larger
        parts = []
        for k in range(0, batch["inputs"].shape[0], rows):
            g = trainer.global_batch({key: batch[key][k:k + rows] for key in ("inputs", "targets", "segment_ids")})
            with jax.set_mesh(mesh), axis_rules(rules):
                parts.append(jax.device_get(evaluate_rows(trainer.params, trainer.frozen, g)))
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}

    score = (reward_model_scorer(reward, template, cfg.seq_len, mesh, rules, rows) if reward is not None
             else grader_scorer(reward_fn))
    make_sampler = lambda: Sampler(policy.graphdef, split_critic(trainer.params)[0], tok, policy.cfg, mesh,  # noqa: E731
                                   rules)
    rollouts = PPORollouts(cfg, items, prompts, tok, template, make_sampler, evaluate, score)
    if by_grader:   # accuracy by the grader: the held-out problems whose answers it can check
        test_items = held_out_graded(test_items, cfg.data.match)
    # Held-out prompts that fit data.max_prompt_len, the first eval_generate of them.
    held_out = [(it, p) for it in test_items
                if len(p := template.prompt(prompt_messages(it["messages"]), tools=it.get("tools") or None).tolist())
                <= cfg.data.max_prompt_len][:cfg.eval_generate]
    if len(held_out) < min(cfg.eval_generate, len(test_items)):
        say(f"held-out: {len(held_out)} prompts fit data.max_prompt_len={cfg.data.max_prompt_len} (of {len(test_items)})")
    greedy = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=0.0, stop_token_ids=rollouts.stops)
    last_samples: list[dict] = []

    def run_eval(tr: Trainer) -> dict[str, float]:
        if by_grader:   # held-out accuracy, the grader's (per task with several)
            res = chat_accuracy(make_sampler(), template, [it for it, _ in held_out], grade, sampling=greedy,
                                seed=cfg.seed, batch=cfg.data.batch_size, progress=jax.process_index() == 0)
            last_samples[:] = res["samples"]
            return {f"eval/{k}": float(v) for k, v in res["metrics"].items()}
        if reward is None:   # a reward function of one's own: its held-out reward, and the grader's accuracy
            return reward_eval(make_sampler(), template, [it for it, _ in held_out], reward_fn, grade, cfg.data.match,
                               greedy, cfg.seed, cfg.data.batch_size, last_samples)
        # Greedy replies in rollout-sized calls (the last padded with copies), scored as rollouts are.
        per, scores, samples, sampler = cfg.data.batch_size, [], [], make_sampler()
        for k in range(0, len(held_out), per):
            picked = held_out[k:k + per]
            padded = picked + [picked[-1]] * (per - len(picked))
            _, _, texts, _ = sample_rows(sampler, tok, [p for _, p in padded], greedy, cfg.seed, cfg.seq_len)
            s = score(texts[:len(picked)], [it for it, _ in picked])
            scores += s.tolist()
            samples += [{"reply": t, "score": float(v)} for t, v in zip(texts, s)]
        last_samples[:] = samples
        return {"eval/score": float(np.mean(scores)), "eval/n": float(len(scores))}

    result = trainer.fit(rollouts, workdir, evaluate=run_eval if held_out else None,
                         on_eval=lambda step, m: say(f"step {step}: " + describe(m)), host_metrics=rollouts.pop_metrics)
    write_eval_samples(workdir, result.step, last_samples)
    out = final_metrics(result, trainer, t_start)
    out.update({k.replace("train/", "final/train_"): v for k, v in result.train.items()
                if k in ("train/objective/scores", "train/objective/kl", "train/completions/mean_length")})
    return out


def describe(m: dict) -> str:
    """``held-out score 0.412 over 100 prompts`` (a reward model), else GRPO's (``held-out reward ...,
    held-out accuracy 0.235 of 100``)."""
    if "eval/score" in m:
        return f"held-out score {m['eval/score']:.3f} over {int(m.get('eval/n', 0))} prompts"
    return describe_graded(m)


__all__ = ["PPOConfig", "PPORollouts", "RolloutFn", "Scorer", "grader_scorer", "ppo_loss_fn", "reward_model_scorer",
           "rollout_advantages", "run_ppo", "sample_rows", "split_critic", "token_values"]
