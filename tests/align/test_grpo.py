"""GRPO: the loss and the group advantages against TRL's ``GRPOTrainer`` (transcribed in torch), the
rollout rows against the sampler's own log-probs, and the runner end to end on a tiny model (learning
a reward, exact resume, LoRA with a KL to its base, the config's errors)."""

import dataclasses
import json
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmforge.align.grpo import (GRPOConfig, PromptDataConfig, Rollouts, completion_logprobs, rollout_batch,
                                run_grpo)
from lmforge.data import load_tokenizer
from lmforge.data.chat import ChatFormat
from lmforge.infer import Sampler, SamplingConfig
from lmforge.model import axis_rules
from lmforge.train import group_advantages, grpo_loss, per_token_kl
from lmforge.train.mesh import MeshConfig, make_mesh
from lmforge.weights import load_params


# ------------------------------------------------------------------------------------- TRL, in torch
def trl_advantages(rewards, g, scale):
    """TRL 1.16 ``GRPOTrainer._generate_and_score_completions``: rewards minus the group mean, divided by
    ``nanstd`` (Bessel-corrected) of the group or of the batch, plus 1e-4."""
    torch = pytest.importorskip("torch")
    r = torch.tensor(rewards, dtype=torch.float64)
    mean = r.view(-1, g).mean(1).repeat_interleave(g)
    std = r.view(-1, g).std(1).repeat_interleave(g) if scale in ("group", "none") else r.std().expand_as(r)
    adv = r - mean
    return (adv if scale == "none" else adv / (std + 1e-4)).numpy()


def trl_loss(lp, old, adv, mask, ref, beta, eps_low, eps_high, loss_type, max_len, level="token"):
    """TRL 1.16 ``GRPOTrainer._compute_loss`` (and its clip-ratio metrics) in float64, with
    ``importance_sampling_level`` token or sequence (one ratio per completion, shape (B, 1))."""
    torch = pytest.importorskip("torch")
    t = lambda x: torch.tensor(np.asarray(x), dtype=torch.float64)          # noqa: E731
    lp, old, mask, adv = t(lp), t(old), t(mask), t(adv).unsqueeze(1)
    log_ratio = lp - old
    if level == "sequence":
        log_ratio = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)
    coef_1 = torch.exp(log_ratio)
    coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
    per_token = -torch.min(coef_1 * adv, coef_2 * adv)
    if beta:
        r = t(ref)
        per_token = per_token + beta * (torch.exp(r - lp) - (r - lp) - 1)
    if loss_type == "grpo":
        loss = ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "dr_grpo":
        loss = (per_token * mask).sum() / (per_token.size(0) * max_len)
    else:   # dapo over one global batch (and bnpo)
        loss = (per_token * mask).sum() / mask.sum().clamp(min=1.0)
    low = ((coef_1 < 1 - eps_low) & (adv < 0)).double()
    high = ((coef_1 > 1 + eps_high) & (adv > 0)).double()
    if level == "sequence":   # one value per completion: their mean
        return float(loss), {"clip_ratio/low_mean": float(low.mean()), "clip_ratio/high_mean": float(high.mean())}
    return float(loss), {"clip_ratio/low_mean": float((low * mask).sum() / mask.sum()),
                         "clip_ratio/high_mean": float((high * mask).sum() / mask.sum())}


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_group_advantages_equal_trl(scale):
    rewards = np.array([1, 0, 0, 1, 0.5, 0.5, 0.5, 0.5, 0, 0, 1, 1], np.float32)     # the middle group: all equal
    adv, m = group_advantages(jnp.asarray(rewards), 4, scale_rewards=scale)
    np.testing.assert_allclose(np.asarray(adv), trl_advantages(rewards, 4, scale), rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(adv)[4:8] == 0)                      # a group that scored the same teaches nothing
    assert float(m["frac_reward_zero_std"]) == pytest.approx(0.0 if scale == "batch" else 1 / 3)   # TRL's: of the std used
    assert float(m["reward"]) == pytest.approx(rewards.mean())
    groups = rewards.reshape(-1, 4).std(-1, ddof=1)   # TRL logs the mean of the std each completion is scaled by
    assert float(m["reward_std"]) == pytest.approx(rewards.std(ddof=1) if scale == "batch" else groups.mean(), rel=1e-5)
    with pytest.raises(ValueError, match="num_generations=1"):
        group_advantages(jnp.asarray(rewards), 1)
    with pytest.raises(ValueError, match=r"shape \(12,\); expected \(P \* G,\) with G=5"):
        group_advantages(jnp.asarray(rewards), 5)
    with pytest.raises(ValueError, match="scale_rewards='mean'"):
        group_advantages(jnp.asarray(rewards), 4, scale_rewards="mean")


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("loss_type", ["dapo", "grpo", "dr_grpo"])
@pytest.mark.parametrize("beta,eps_high", [(0.0, 0.2), (0.04, 0.28)])
def test_grpo_loss_equals_trl(loss_type, beta, eps_high, level):
    rng = np.random.default_rng(0)
    b, t = 6, 7
    lp = rng.normal(-2, 0.5, (b, t))
    # an older policy: ratios off 1, some clipped (per completion too: each row's shift has its own sign)
    old = lp + rng.normal(0, 0.3, (b, t)) + (0.4 * rng.choice([-1, 1], b)[:, None] if level == "sequence" else 0)
    ref = lp + rng.normal(0, 0.2, (b, t))
    adv = rng.normal(0, 1, b)
    mask = (np.arange(t)[None, :] < np.array([7, 3, 5, 1, 6, 0])[:, None]).astype(np.float64)   # the last: no token
    loss, m = grpo_loss(*(jnp.asarray(x, jnp.float32) for x in (lp, old, adv, mask)), ref_logprobs=jnp.asarray(ref),
                        beta=beta, epsilon_low=0.2, epsilon_high=eps_high, loss_type=loss_type, max_completion_length=9,
                        importance_sampling_level=level)
    want, trl_m = trl_loss(lp, old, adv, mask, ref, beta, 0.2, eps_high, loss_type, 9, level)
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)
    assert float(m["loss"]) == float(loss)
    assert float(m["clip_ratio/low_mean"]) + float(m["clip_ratio/high_mean"]) > 0     # clipping is exercised
    if (loss_type, level) == ("grpo", "sequence"):   # shares of completions, as TRL logs them
        for k, v in trl_m.items():
            np.testing.assert_allclose(float(m[k]), v, rtol=1e-5)
    if loss_type == "dapo":
        if level == "token":   # token means, as TRL logs them
            for k, v in trl_m.items():
                np.testing.assert_allclose(float(m[k]), v, rtol=1e-5)
        assert float(m["weight_sum"]) == mask.sum()
        if beta:
            kl = np.exp(ref - lp) - (ref - lp) - 1
            np.testing.assert_allclose(float(m["kl"]), (kl * mask).sum() / mask.sum(), rtol=1e-5)
    else:
        assert float(m["weight_sum"]) == (b if loss_type == "grpo" else b * 9)
    lp_inf = np.where(mask > 0, lp, -np.inf)            # padding that overflows stays out of the loss
    loss_inf, _ = grpo_loss(*(jnp.asarray(x, jnp.float32) for x in (lp_inf, old, adv, mask)), ref_logprobs=jnp.asarray(ref),
                            beta=beta, epsilon_low=0.2, epsilon_high=eps_high, loss_type=loss_type,
                            max_completion_length=9, importance_sampling_level=level)
    np.testing.assert_allclose(float(loss_inf), want, rtol=1e-5)
    assert ("kl" in m) == bool(beta)


def test_grpo_loss_is_the_policy_gradient_at_ratio_one():
    """With old = stop_gradient(logp) (one update per rollout) the gradient of the dapo loss is
    -A / (token count) on every completion token: REINFORCE with the group baseline."""
    lp = jnp.asarray(np.random.default_rng(1).normal(-1, 0.3, (3, 4)), jnp.float32)
    adv = jnp.asarray([1.0, -0.5, 0.0])
    mask = jnp.asarray([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], jnp.float32)
    grad = jax.grad(lambda x: grpo_loss(x, jax.lax.stop_gradient(x), adv, mask)[0])(lp)
    np.testing.assert_allclose(np.asarray(grad), -np.asarray(adv)[:, None] * np.asarray(mask) / 7, rtol=1e-6)


def test_per_token_kl_and_loss_errors():
    np.testing.assert_allclose(float(per_token_kl(jnp.asarray(-1.0), jnp.asarray(-2.0))), math.exp(-1) + 1 - 1, rtol=1e-6)
    assert float(per_token_kl(jnp.asarray(-3.0), jnp.asarray(-3.0))) == 0.0
    x, a, m = jnp.zeros((2, 3)), jnp.zeros(2), jnp.ones((2, 3))
    with pytest.raises(ValueError, match="loss_type='bnpo'"):
        grpo_loss(x, x, a, m, loss_type="bnpo")
    with pytest.raises(ValueError, match="beta > 0 needs ref_logprobs"):
        grpo_loss(x, x, a, m, beta=0.1)
    with pytest.raises(ValueError, match="dr_grpo' needs max_completion_length"):
        grpo_loss(x, x, a, m, loss_type="dr_grpo")
    with pytest.raises(ValueError, match=r"advantages \(B,\); got"):
        grpo_loss(x, x, jnp.zeros(3), m)


# ------------------------------------------------------------------------------------------ rollouts
def test_rollout_rows_and_the_samplers_logprobs(base, tok_dir):
    """The training rows of a rollout give back, teacher-forced, the log-probs the sampler reported
    for the tokens it drew (at temperature 1: ``logprobs``; at 0.7: ``sampling_logprobs``)."""
    mesh = make_mesh(MeshConfig(data=8))
    loaded = load_params(base, mesh)
    tok = load_tokenizer(tok_dir)
    sampler = Sampler(loaded.graphdef, loaded.params, tok, loaded.cfg, mesh, MeshConfig().rules)
    prompts = [tok.encode("def f(x):"), tok.encode("import os")]
    for temperature, key in ((1.0, "logprobs"), (0.7, "sampling_logprobs")):
        out = sampler.generate_ids(prompts, SamplingConfig(max_new_tokens=12, temperature=temperature, n=4), seed=3)
        batch = rollout_batch(prompts, out.tokens, out.lengths, np.arange(8.0), 4, seq_len=24,
                              per_token={"sampled": getattr(out, key)})
        sampled = batch.pop("sampled")          # the sampler's log-probs on the tokens' target positions
        assert batch["inputs"].shape == batch["mask"].shape == sampled.shape == (8, 24)
        assert batch["advantages"].shape == (8,) and (sampled[batch["mask"] == 0] == 0).all()
        r = 5    # prompt 1 ("import os"), its second completion
        p, n = len(prompts[1]), int(out.lengths[r])
        assert batch["inputs"][r, :p].tolist() == prompts[1] and batch["targets"][r, p - 1:p - 1 + n].tolist() == \
            out.tokens[r, :n].tolist()
        assert batch["mask"][r].sum() == n and batch["mask"][r, p - 1] == 1 and batch["segment_ids"][r].sum() == p + n - 1
        with jax.set_mesh(mesh), axis_rules(MeshConfig().rules):
            lp, _ = jax.jit(lambda prm, b: completion_logprobs(loaded.graphdef, prm, b, temperature=temperature))(
                loaded.params, {k: jnp.asarray(v) for k, v in batch.items()})
        on = batch["mask"] > 0
        np.testing.assert_allclose(np.asarray(lp)[on], sampled[on], atol=2e-4)
    kept = rollout_batch(prompts, out.tokens, out.lengths, np.zeros(8), 4, seq_len=24, keep=np.arange(8) % 2 == 0)
    assert kept["mask"][1::2].sum() == 0 and kept["mask"][::2].sum() == batch["mask"][::2].sum()
    with pytest.raises(ValueError, match="exceed 8"):
        rollout_batch(prompts, out.tokens, out.lengths, np.zeros(8), 4, seq_len=7)
    with pytest.raises(ValueError, match=r"per_token mask, x \(8,\); expected \(B, M\) = \(8, 12\)"):
        rollout_batch(prompts, out.tokens, out.lengths, np.zeros(8), 4, seq_len=24,
                      per_token={"mask": out.logprobs, "x": np.zeros(8)})


def test_rollouts_take_every_problem_once_a_pass_and_keep_their_position():
    cfg = GRPOConfig(data=PromptDataConfig(synthetic=(("letter_count", 1.0),), batch_size=3), num_generations=2)
    roll = Rollouts(cfg, [{}] * 7, [[1]] * 7, _Tok(), _Template(), make_sampler=None)
    seen = [i for k in range(7) for i in roll.order(k)]          # 21 draws: three passes over 7 problems
    for p in range(3):
        assert sorted(seen[7 * p:7 * (p + 1)]) == list(range(7))
    assert seen[:7] != seen[7:14]                                 # each pass in a new order
    roll.count = 5
    again = Rollouts(cfg, [{}] * 7, [[1]] * 7, _Tok(), _Template(), make_sampler=None)
    again.set_state(roll.get_state())
    assert again.count == 5
    assert len({roll.seed(k) for k in range(100)}) == 100 and roll.seed(3) != Rollouts(
        dataclasses.replace(cfg, seed=1), [{}], [[1]], _Tok(), _Template(), make_sampler=None).seed(3)


def test_a_rollout_from_a_fake_sampler():
    """What one rollout does with the sampler's arrays: stop ids out of the graded text, the seed of its
    index, truncated completions out of the loss when asked, rewards checked, another advantage taken."""
    from lmforge.infer.sampler import SamplerOutput

    calls = []

    class Fake:
        def generate_ids(self, prompts, cfg, *, seed):
            calls.append(seed)
            tokens = np.array([[5, 6, 3, 0], [7, 7, 7, 7], [5, 3, 0, 0], [6, 6, 6, 6]], np.int32)
            lengths = np.array([3, 4, 2, 4], np.int32)
            z = np.zeros((4, 4), np.float32)
            return SamplerOutput(tokens, z, z, np.arange(4) < lengths[:, None], lengths, np.array([1, 0, 1, 0]),
                                 np.arange(4) // 2)

    cfg = GRPOConfig(data=PromptDataConfig(synthetic=(("letter_count", 1.0),), batch_size=2, max_prompt_len=4),
                     num_generations=2, max_new_tokens=4, mask_truncated_completions=True)
    graded = []
    reward = lambda task, text, answer: graded.append(text) or float(text == "ef")             # noqa: E731
    roll = Rollouts(cfg, [{"task": "t", "answer": "1"}] * 3, [[1, 2]] * 3, _Tok(), _Template(), lambda: Fake(),
                    reward_fn=reward, advantage_fn=lambda r: (r - 0.5, {"custom": 1.0}))
    batch = next(roll)
    assert graded == ["ef", "gggg", "e", "ffff"] and calls == [roll.seed(0)]          # the stop id 3 is not graded
    assert batch["advantages"].tolist() == [0.5, -0.5, -0.5, -0.5]
    assert batch["mask"].sum(-1).tolist() == [3, 0, 2, 0]                             # truncated rows left out
    m = roll.pop_metrics()
    assert m["train/custom"] == 1.0 and m["train/reward"] == 0.25 and m["train/completions/clipped_ratio"] == 0.5
    roll.reward_fn = lambda *a: float("nan")
    with pytest.raises(ValueError, match="reward_fn gave nan for completion 0 of rollout 1"):
        next(roll)
    with pytest.raises(ValueError, match="prompt 0 has 5 tokens, over data.max_prompt_len=4"):
        Rollouts(cfg, [{}], [[1] * 5], _Tok(), _Template(), None)


def test_a_rollout_feeds_num_iterations_steps_with_its_old_logprobs_and_resumes_between_them():
    """num_iterations=3: one sampler call every three steps, the same rows each time, the old log-probs
    taken once (on completion tokens only); a state taken between two of those steps holds the rows and
    gives them back, and one written under another num_iterations is refused."""
    from lmforge.infer.sampler import SamplerOutput

    calls, scored = [], []

    class Fake:
        def generate_ids(self, prompts, cfg, *, seed):
            calls.append(seed)
            tokens = np.array([[5, 3], [6, 6], [5, 3], [6, 3]], np.int32) + len(calls)
            lengths = np.array([2, 2, 2, 2], np.int32)
            z = np.zeros((4, 2), np.float32)
            return SamplerOutput(tokens, z, z, np.ones((4, 2), bool), lengths, np.array([1, 0, 1, 1]), np.arange(4) // 2)

    def old_logprobs(batch):
        scored.append(batch["inputs"].copy())
        return np.full(batch["inputs"].shape, -1.5, np.float32)

    cfg = GRPOConfig(data=PromptDataConfig(synthetic=(("letter_count", 1.0),), batch_size=2, max_prompt_len=2),
                     num_generations=2, max_new_tokens=2, num_iterations=3)
    items = [{"task": "t", "answer": "1"}] * 4
    make = lambda **kw: Rollouts(cfg, items, [[1, 2]] * 4, _Tok(), _Template(), lambda: Fake(),   # noqa: E731
                                 reward_fn=lambda *a: float(len(calls)), **kw)
    roll = make(old_logprobs=old_logprobs)
    first = [next(roll) for _ in range(2)]
    assert len(calls) == 1 and len(scored) == 1
    np.testing.assert_array_equal(first[0]["inputs"], first[1]["inputs"])
    old, mask = first[0]["old_logprobs"], first[0]["mask"]
    assert old.shape == mask.shape and (old[mask > 0] == -1.5).all() and (old[mask == 0] == 0).all()
    state = roll.get_state()
    third = next(roll)
    again = make(old_logprobs=old_logprobs)
    again.set_state(state)
    resumed = next(again)
    assert len(calls) == 1                                      # the rows came from the state, not a new rollout
    for key in third:
        np.testing.assert_array_equal(resumed[key], third[key], err_msg=key)
    fourth = next(roll)
    assert len(calls) == 2 and roll.count == 2 and not np.array_equal(fourth["inputs"], third["inputs"])
    changed = Rollouts(dataclasses.replace(cfg, num_iterations=2), items, [[1, 2]] * 4, _Tok(), _Template(), None,
                       old_logprobs=old_logprobs)
    with pytest.raises(ValueError, match=r"num_iterations=3 \(now 2\)"):
        changed.set_state(state)
    with pytest.raises(ValueError, match="num_iterations=3: Rollouts needs old_logprobs"):
        make()
    with pytest.raises(ValueError, match="num_iterations=0: expected a whole number >= 1"):
        GRPOConfig(num_iterations=0)


def test_steps_per_generation_splits_each_pass_over_a_rollout():
    """steps_per_generation=2, num_iterations=2: one sampler call every four steps; each pass gives
    every row once, in two halves shuffled afresh per pass, with the old log-probs taken once over the
    whole rollout; a state taken mid-pass resumes on the same half; a changed split is refused."""
    from lmforge.infer.sampler import SamplerOutput

    calls, scored = [], []

    class Fake:
        def generate_ids(self, prompts, cfg, *, seed):
            calls.append(seed)
            tokens = np.array([[5, 3], [6, 6], [7, 3], [8, 3]], np.int32) + len(calls)
            z = np.zeros((4, 2), np.float32)
            return SamplerOutput(tokens, z, z, np.ones((4, 2), bool), np.full(4, 2, np.int32), np.array([1, 0, 1, 1]),
                                 np.arange(4) // 2)

    def old_logprobs(batch):
        scored.append(len(batch["inputs"]))
        return np.full(batch["inputs"].shape, -1.5, np.float32)

    cfg = GRPOConfig(data=PromptDataConfig(synthetic=(("letter_count", 1.0),), batch_size=2, max_prompt_len=2),
                     num_generations=2, max_new_tokens=2, num_iterations=2, steps_per_generation=2)
    assert (cfg.rows, cfg.step_rows, cfg.steps_per_rollout) == (4, 2, 4)
    items = [{"task": "t", "answer": "1"}] * 4
    make = lambda c=cfg: Rollouts(c, items, [[1, 2]] * 4, _Tok(), _Template(), lambda: Fake(),   # noqa: E731
                                  reward_fn=lambda *a: 1.0, old_logprobs=old_logprobs)
    roll = make()
    steps = [next(roll) for _ in range(3)]
    state = roll.get_state()
    fourth = next(roll)
    steps.append(fourth)
    assert len(calls) == 1 and scored == [4]                           # one rollout, its old log-probs once, all rows
    completion = lambda b: [tuple(r) for r in b["targets"][:, 1:3]]     # noqa: E731
    for first, second in (steps[:2], steps[2:]):                        # each pass: every row once
        assert len(first["inputs"]) == len(second["inputs"]) == 2
        assert sorted(completion(first) + completion(second)) == sorted([(6, 4), (7, 7), (8, 4), (9, 4)])
    assert all((b["old_logprobs"][b["mask"] > 0] == -1.5).all() for b in steps)
    again = make()
    again.set_state(state)
    for key, value in next(again).items():
        np.testing.assert_array_equal(value, fourth[key], err_msg=key)
    assert len(calls) == 1
    next(roll)
    assert len(calls) == 2
    with pytest.raises(ValueError, match=r"steps_per_generation=2 \(now 1\)"):
        make(dataclasses.replace(cfg, steps_per_generation=1)).set_state(state)
    with pytest.raises(ValueError, match="steps_per_generation=2: Rollouts needs old_logprobs"):
        Rollouts(dataclasses.replace(cfg, num_iterations=1), items, [[1, 2]] * 4, _Tok(), _Template(), None)
    with pytest.raises(ValueError, match=r"2 \* 2 rows do not split into steps_per_generation=3"):
        dataclasses.replace(cfg, steps_per_generation=3)
    with pytest.raises(ValueError, match="importance_sampling_level='seq': expected one of token, sequence"):
        GRPOConfig(importance_sampling_level="seq")


class _Tok:
    eos_id = 2

    def decode(self, ids):
        return "".join(chr(96 + i) for i in ids)


class _Template:
    stop_ids = (3,)


# --------------------------------------------------------------------------------------------- runner
def _cfg(base, **kw) -> GRPOConfig:
    data = PromptDataConfig(synthetic=(("letter_count", 1.0),), train_size=40, test_size=8, batch_size=4,
                            max_prompt_len=40)
    kw = {"num_generations": 4, "max_new_tokens": 16, "steps": 4, "log_every": 1, "eval_generate": 8,
          "eval_on_start": False, "mesh": MeshConfig(data=8), **kw}
    return GRPOConfig(init_from=str(base), data=data, **kw)


def _e_share(task, completion, answer):
    """A reward a random model can learn: the share of its completion's characters that are 'e'."""
    return completion.count("e") / max(len(completion), 1)


def test_grpo_learns_a_reward(base, tmp_path):
    """Twenty steps at a high learning rate raise the reward of a random tiny model: the mean of the last
    five rollouts beats the first five, on the tokens it samples itself."""
    from lmforge.train.optim import OptimConfig

    cfg = _cfg(base, steps=20, eval_generate=0, num_generations=8, optim=OptimConfig(lr=3e-3, warmup_steps=0,
                                                                                         weight_decay=0.0))
    run_grpo(cfg, tmp_path / "run", reward_fn=_e_share)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    reward = [r["train/reward"] for r in rows if "train/reward" in r]
    assert len(reward) == 20 and np.mean(reward[-5:]) > 1.25 * np.mean(reward[:5]), reward   # measured: 0.092 -> 0.137
    assert all(r["train/weight_sum"] > 0 and 0 <= r["train/completions/clipped_ratio"] <= 1 for r in rows if "step" in r
               and "train/loss" in r)


def test_grpo_resumes_exactly_and_trains_lora_against_its_base(base, tmp_path):
    """Four steps straight equal two steps, a stop and two more (the rollouts' position is in the
    checkpoint; the schedule spans four steps in both); LoRA with a KL to its base reports a KL that grows from 0."""
    cfg = _cfg(base, beta=0.1, lora=__import__("lmforge.model", fromlist=["LoRAConfig"]).LoRAConfig(rank=4),
               checkpoint_every=2, optim=dataclasses.replace(GRPOConfig().optim, lr=1e-2, decay_steps=4))
    straight = run_grpo(cfg, tmp_path / "straight", reward_fn=_e_share)
    run_grpo(dataclasses.replace(cfg, steps=2), tmp_path / "split", reward_fn=_e_share)
    resumed = run_grpo(cfg, tmp_path / "split", reward_fn=_e_share)
    assert resumed["final/step"] == straight["final/step"] == 4
    read = lambda d: [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines() if "train/loss" in x]  # noqa: E731
    a, b = read(tmp_path / "straight"), read(tmp_path / "split")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for x, y in zip(a, b):
        assert x["train/reward"] == y["train/reward"] and x["train/loss"] == pytest.approx(y["train/loss"], rel=1e-5)
    assert a[0]["train/kl"] == 0.0 and a[-1]["train/kl"] > 0
    mesh = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    p1, p2 = load_params(tmp_path / "straight", mesh).params, load_params(tmp_path / "split", mesh).params
    for x, y in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6)
    assert json.loads((tmp_path / "straight" / "base.json").read_text())["source"] == str(base)
    assert (tmp_path / "straight" / "eval_samples.jsonl").is_file()


def test_grpo_num_iterations_clips_against_the_sampling_policy_and_resumes_mid_rollout(base, tmp_path):
    """num_iterations=2: the first step on a rollout sees ratio 1 (the weights that sampled it), the
    second a ratio moved by the first update; a run stopped between the two steps of a rollout and
    resumed equals one run straight. The second run: steps_per_generation=2 with GSPO's sequence-level
    ratio, four steps on one rollout, each moved from the first on."""
    cfg = _cfg(base, num_iterations=2, checkpoint_every=1,
               optim=dataclasses.replace(GRPOConfig().optim, lr=3e-2, decay_steps=4))
    gspo = dataclasses.replace(cfg, steps_per_generation=2, importance_sampling_level="sequence", loss_type="grpo")
    run_grpo(gspo, tmp_path / "gspo", reward_fn=_e_share)
    run_grpo(cfg, tmp_path / "straight", reward_fn=_e_share)
    run_grpo(dataclasses.replace(cfg, steps=3), tmp_path / "split", reward_fn=_e_share)
    run_grpo(cfg, tmp_path / "split", reward_fn=_e_share)
    read = lambda d: [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines() if "train/loss" in x]  # noqa: E731
    a, b = read(tmp_path / "straight"), read(tmp_path / "split")
    assert [r["step"] for r in a] == [r["step"] for r in b] == [1, 2, 3, 4]
    assert a[0]["train/ratio"] == pytest.approx(1.0, abs=1e-4) and a[2]["train/ratio"] == pytest.approx(1.0, abs=1e-4)
    assert abs(a[1]["train/ratio"] - 1.0) > 1e-3, a[1]
    assert "train/reward" in a[0] and "train/reward" not in a[1]   # one rollout's metrics, logged at its first step
    for x, y in zip(a, b):
        assert x["train/loss"] == pytest.approx(y["train/loss"], rel=1e-5, abs=1e-7), (x, y)
        assert x["train/ratio"] == pytest.approx(y["train/ratio"], rel=1e-5)
    g = read(tmp_path / "gspo")
    assert [r["step"] for r in g] == [1, 2, 3, 4] and ["train/reward" in r for r in g] == [True, False, False, False]
    assert g[0]["train/ratio"] == pytest.approx(1.0, abs=1e-4) and all(abs(r["train/ratio"] - 1) > 1e-3 for r in g[1:])
    assert g[0]["train/weight_sum"] == cfg.rows // 2 == 8      # grpo: one weight per completion, half the rollout


def test_a_task_answered_through_a_tool_is_refused_before_anything_is_written(tmp_path, capsys):
    """Rollouts run no tools: a calculator task's completions were bare calls, rewarded 0 (reward 0, loss 0,
    no word said). Refused in the config check, so `lmforge run` writes no folder."""
    from lmforge.cli.main import main

    message = ("data.synthetic: task calculator is answered through the calculator tool, but rollouts do not run "
               "tools")
    with pytest.raises(ValueError, match=message):
        GRPOConfig(data=PromptDataConfig(synthetic=(("arithmetic", 1.0), ("calculator", 1.0))))
    GRPOConfig(data=PromptDataConfig(synthetic=(("arithmetic", 1.0), ("identity", 1.0))))   # answered in text
    run = tmp_path / "run"
    assert main(["run", "experiments/align/grpo_arithmetic.py:smoke", f"init_from={tmp_path}",
                 "data.synthetic=((calculator,1.0),)", "--workdir", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and not run.exists()


def test_a_file_conversation_answered_through_a_tool_is_refused_naming_its_line(tmp_path):
    """The same for a data file: a record whose reference answer is reached by a calculator call."""
    from lmforge.align.grpo import read_problems
    from lmforge.data.chat import format_call

    text = [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "#### 5"}]
    tool = [{"role": "user", "content": "What is 2222 + 222?"},
            {"role": "assistant", "content": format_call("calculator", expression="2222 + 222")},
            {"role": "tool", "content": "2444"}, {"role": "assistant", "content": "#### 2444"}]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps({"messages": m, "answer": a}) + "\n" for m, a in ((text, 5), (tool, 2444))))
    cfg = GRPOConfig(data=PromptDataConfig(path=str(path), val_fraction=0.0))
    with pytest.raises(ValueError, match=rf"{path}:2: the reference answer goes through the calculator tool, but "
                                         rf"GRPO's rollouts run no tools"):
        read_problems(cfg, template=types.SimpleNamespace(prompt=lambda messages, tools=None: np.zeros(3, np.int32)))


def test_a_files_tools_column_is_shown_in_the_rollout_prompts(tmp_path):
    """A chat file's ``tools`` column reaches the template with each problem's prompt (as SFT trained it)."""
    from lmforge.align.grpo import read_problems

    weather = {"type": "function", "function": {"name": "weather", "description": "today's weather",
                                                "parameters": {"type": "object", "properties": {}}}}
    ask = [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "#### 5"}]
    path = tmp_path / "tools.jsonl"
    path.write_text(json.dumps({"messages": ask, "answer": 5, "tools": [weather]}) + "\n"
                    + json.dumps({"messages": ask, "answer": 5}) + "\n")
    shown = []
    template = types.SimpleNamespace(prompt=lambda messages, tools=None: shown.append(tools) or np.zeros(3, np.int32))
    items, prompts, _ = read_problems(GRPOConfig(data=PromptDataConfig(path=str(path), val_fraction=0.0)), template)
    assert len(items) == len(prompts) == 2 and shown == [[weather], None]


def test_grpo_config_errors(base, tmp_path):
    with pytest.raises(ValueError, match="num_generations=1: expected a whole number >= 2"):
        GRPOConfig(num_generations=1)
    with pytest.raises(ValueError, match="'refusal' has no checkable answer"):
        PromptDataConfig(synthetic=(("refusal", 1.0),))
    with pytest.raises(ValueError, match="loss_type='ppo'"):
        GRPOConfig(loss_type="ppo")
    with pytest.raises(ValueError, match="reference_from=x is read only with beta > 0"):
        GRPOConfig(reference_from="x")
    with pytest.raises(ValueError, match="prefetch=2: a rollout is sampled from the weights of the step before"):
        GRPOConfig(prefetch=2)
    with pytest.raises(ValueError, match="temperature=0"):
        GRPOConfig(temperature=0.0)
    with pytest.raises(ValueError, match=r"max_prompt_len \+ max_new_tokens=104 exceeds the max_seq_len=64"):
        _cfg(base, max_new_tokens=64).check_runnable()
    with pytest.raises(ValueError, match=r"data.batch_size \* num_generations=12 must be divisible"):   # 3 prompts x 4 rows over 8 devices
        run_grpo(dataclasses.replace(_cfg(base), data=dataclasses.replace(_cfg(base).data, batch_size=3)),
                 tmp_path / "rows")
    with pytest.raises(ValueError, match="no training problem is left"):
        run_grpo(dataclasses.replace(_cfg(base), data=dataclasses.replace(_cfg(base).data, max_prompt_len=4),
                                     max_new_tokens=8), tmp_path / "long")
    assert not (tmp_path / "rows" / "checkpoints").exists()


def test_grpo_chat_template_gives_end_of_turn_stops(tok_dir):
    tok = load_tokenizer(tok_dir)
    roll = Rollouts(GRPOConfig(), [{}], [[1]], tok, ChatFormat(tok), make_sampler=None)
    assert roll.stops == (ChatFormat(tok).end_id, tok.eos_id) and roll.sampling.n == 8


def test_grpo_experiment_smoke_through_the_cli(base, tmp_path, capsys):
    """The experiment's smoke variant runs through ``lmforge run`` and logs its rollouts; ``lmforge plan``
    says it does not plan rollouts; a reward model is refused as the policy before anything is written."""
    import pathlib

    from lmforge.cli.main import main
    from lmforge.model import ModelConfig, build_model, create_sharded
    from lmforge.weights import save_model_folder

    exp = pathlib.Path(__file__).resolve().parents[2] / "experiments" / "align" / "grpo_arithmetic.py"
    work = tmp_path / "run"
    assert main(["run", f"{exp}:smoke", f"init_from={base}", "mesh.data=8", "--workdir", str(work)]) == 0
    rows = [json.loads(x) for x in (work / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/reward" in r] == [1, 2, 3]
    assert {"eval/accuracy", "eval/n"} <= set(rows[0]) and rows[0]["step"] == 0      # the starting policy, scored
    assert json.loads((work / "config.json").read_text())["num_generations"] == 4
    assert main(["plan", str(exp), f"init_from={base}"]) == 2
    assert "a GRPO step also samples its rollouts" in capsys.readouterr().err
    rm = tmp_path / "rm"
    cfg = dataclasses.replace(ModelConfig.gpt2_tiny(vocab_size=512, max_seq_len=64), num_labels=1)
    mesh = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    _, params, _ = create_sharded(lambda: build_model(cfg, rngs=nnx.Rngs(0)), mesh, MeshConfig().rules)
    save_model_folder(rm, cfg, params)
    assert main(["run", f"{exp}:smoke", f"init_from={rm}", "--workdir", str(tmp_path / "x")]) == 2
    assert "GRPO's policy needs a language model" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_rollout_source_keeps_its_metrics_and_split_across_a_resume():
    """What the base keeps for every trainer built on it (a second consumer's findings): the metrics recorded
    since the last log go into the state; a half-used rollout written under another split, or a state that
    claims steps of a rollout without its rows, is refused; mini-batches cover the rows once a pass, each
    pass in a new order; a dropped source is not kept alive by its pass cache."""
    import gc
    import json
    import weakref

    from lmforge.align.rollouts import RolloutSource

    class Counting(RolloutSource):
        def rollout(self, k):
            self.record({"reward": float(k)})
            return {"rows": np.arange(8) + 100 * k}

    cfg = GRPOConfig(data=PromptDataConfig(synthetic=(("letter_count", 1.0),), batch_size=2))
    src = Counting(cfg, [{}] * 4, [[1]] * 4, _Tok(), _Template(), epochs=2, mini_batches=2)
    got = [next(src)["rows"].tolist() for _ in range(4)]
    assert src.count == 1 and sorted(got[0] + got[1]) == sorted(got[2] + got[3]) == list(range(8))
    assert got[:2] != got[2:]                                       # each pass shuffled afresh
    next(src)                                                       # rollout 1 drawn, its metrics pending
    state = src.get_state()
    again = Counting(cfg, [{}] * 4, [[1]] * 4, _Tok(), _Template(), epochs=2, mini_batches=2)
    again.set_state(state)
    assert again.pop_metrics() == src.pop_metrics() == {"train/reward": 0.5}
    assert [next(again)["rows"].tolist() for _ in range(3)] == [next(src)["rows"].tolist() for _ in range(3)]
    with pytest.raises(ValueError, match=r"mini_batches=2 \(now 4\)"):
        Counting(cfg, [{}] * 4, [[1]] * 4, _Tok(), _Template(), epochs=1, mini_batches=4).set_state(state)
    claimed = json.loads(state)
    claimed["buffer"] = None
    with pytest.raises(ValueError, match="holds none of its rows"):
        again.set_state(json.dumps(claimed).encode())
    with pytest.raises(ValueError, match="epochs=0"):
        Counting(cfg, [{}], [[1]], _Tok(), _Template(), epochs=0)
    from types import SimpleNamespace
    with pytest.raises(ValueError, match=r"SimpleNamespace has no data.seed, data.max_prompt_len: a rollout source "
                                         r"reads a config with seed and"):
        Counting(SimpleNamespace(seed=0, data=SimpleNamespace(batch_size=2)), [{}], [[1]], _Tok(), _Template())
    src.order(0)
    ref = weakref.ref(src)
    del src
    gc.collect()
    assert ref() is None
