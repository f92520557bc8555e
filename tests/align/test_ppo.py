"""RLHF with PPO: GAE, whitening and the clipped losses against a transcription of TRL's ``PPOTrainer``
(0.19), the rollout's rewards, and the runner — learning, exact resume between two mini-batches of a
rollout, the run folder as the policy's weights source, config errors, the CLI."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmforge.align.grpo import PromptDataConfig
from lmforge.align.ppo import PPOConfig, rollout_advantages, run_ppo
from lmforge.data import load_tokenizer
from lmforge.model import LoRAConfig, axis_rules, build_model, create_sharded
from lmforge.train.mesh import MeshConfig, make_mesh
from lmforge.train.objectives import gae_advantages, kl_penalty, masked_whiten, ppo_loss
from lmforge.train.optim import OptimConfig
from lmforge.weights import load_params, read_model_config, save_model_folder


# ------------------------------------------------------------------ TRL 0.19.1, trl/trainer/ppo_trainer.py, core.py
def trl_masked_mean(values, mask):
    return (values * mask).sum() / mask.sum()


def trl_masked_whiten(values, mask, shift_mean=True):
    torch = pytest.importorskip("torch")
    mean = trl_masked_mean(values, mask)
    var = trl_masked_mean((values - mean) ** 2, mask) * (mask.sum() / (mask.sum() - 1))
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    return whitened if shift_mean else whitened + mean


def trl_rollout(logprobs, ref_logprobs, values, scores, kl_coef, estimator, gamma, lam, whiten_rewards):
    """PPOTrainer.train's steps 4-6 for responses that fill the whole length (no padding)."""
    torch = pytest.importorskip("torch")
    logr = ref_logprobs - logprobs
    kl = -logr if estimator == "k1" else (logr.exp() - 1) - logr
    rewards = -kl_coef * kl
    rewards[torch.arange(rewards.size(0)), rewards.size(1) - 1] += scores
    full = torch.ones_like(rewards, dtype=torch.bool)
    if whiten_rewards:
        rewards = trl_masked_whiten(rewards, full, shift_mean=False)
    lastgaelam, reversed_ = 0, []
    for t in reversed(range(rewards.shape[1])):
        nextvalues = values[:, t + 1] if t < rewards.shape[1] - 1 else 0.0
        delta = rewards[:, t] + gamma * nextvalues - values[:, t]
        lastgaelam = delta + gamma * lam * lastgaelam
        reversed_.append(lastgaelam)
    advantages = torch.stack(reversed_[::-1], axis=1)
    returns = advantages + values
    return trl_masked_whiten(advantages, full), returns


def trl_loss(new_logprobs, logprobs, advantages, vpred, values, returns, mask, cliprange, cliprange_value, vf_coef):
    """The micro-batch loss of PPOTrainer.train, both masks given as ``mask``."""
    torch = pytest.importorskip("torch")
    vpredclipped = torch.clamp(vpred, values - cliprange_value, values + cliprange_value)
    vf_losses1, vf_losses2 = torch.square(vpred - returns), torch.square(vpredclipped - returns)
    vf_loss = 0.5 * trl_masked_mean(torch.max(vf_losses1, vf_losses2), mask)
    ratio = torch.exp(new_logprobs - logprobs)
    pg_losses = -advantages * ratio
    pg_losses2 = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    pg_loss = trl_masked_mean(torch.max(pg_losses, pg_losses2), mask)
    return pg_loss + vf_coef * vf_loss, pg_loss, vf_loss


@pytest.mark.parametrize("estimator,whiten_rewards,gamma,lam", [("k1", False, 1.0, 0.95), ("k3", True, 0.9, 0.8)])
def test_rollout_advantages_equal_trl(estimator, whiten_rewards, gamma, lam):
    torch = pytest.importorskip("torch")
    r = np.random.default_rng(0)
    lp, ref = -r.random((4, 6)) * 3, -r.random((4, 6)) * 3
    values, scores = r.normal(size=(4, 6)), r.normal(size=4)
    got = rollout_advantages(lp, ref, values, scores, np.ones((4, 6)), kl_coef=0.05, kl_estimator=estimator,
                             gamma=gamma, lam=lam, whiten_rewards=whiten_rewards)
    t = lambda x: torch.tensor(x, dtype=torch.float64)                        # noqa: E731
    adv, ret = trl_rollout(t(lp), t(ref), t(values), t(scores), 0.05, estimator, gamma, lam, whiten_rewards)
    np.testing.assert_allclose(got["advantages"], adv.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["returns"], ret.numpy(), rtol=1e-4, atol=1e-5)


def test_gae_over_a_padded_row_is_its_completions():
    """A completion at positions 2..4 of a row of 7 (prompt before, padding after) gets the advantages of
    the same tokens alone: the value after its last token is 0, and the positions outside are 0."""
    r = np.random.default_rng(1)
    rewards, values = r.normal(size=(1, 7)), r.normal(size=(1, 7))
    mask = np.array([[0, 0, 1, 1, 1, 0, 0]], np.float32)
    adv, ret = gae_advantages(jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(mask), gamma=0.9, lam=0.8)
    alone, alone_ret = gae_advantages(jnp.asarray(rewards[:, 2:5]), jnp.asarray(values[:, 2:5]), jnp.ones((1, 3)),
                                      gamma=0.9, lam=0.8)
    np.testing.assert_allclose(np.asarray(adv)[:, 2:5], alone, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ret)[:, 2:5], alone_ret, rtol=1e-6)
    assert not np.asarray(adv)[:, [0, 1, 5, 6]].any() and not np.asarray(ret)[:, [0, 1, 5, 6]].any()
    # by hand, gamma = lam = 1: A_t = sum of the rewards from t on - V_t
    a1, _ = gae_advantages(jnp.asarray(rewards), jnp.asarray(values), jnp.asarray(mask), gamma=1.0, lam=1.0)
    np.testing.assert_allclose(np.asarray(a1)[0, 2:5], np.cumsum(rewards[0, 2:5][::-1])[::-1] - values[0, 2:5],
                               rtol=1e-5)


def test_masked_whiten_equals_trl_and_leaves_the_mask_out():
    torch = pytest.importorskip("torch")
    r = np.random.default_rng(2)
    x, mask = r.normal(size=(3, 5)) * 4 + 2, r.random((3, 5)) > 0.3
    for shift in (True, False):
        want = trl_masked_whiten(torch.tensor(x), torch.tensor(mask, dtype=torch.float64), shift).numpy()
        np.testing.assert_allclose(masked_whiten(jnp.asarray(x), jnp.asarray(mask), shift_mean=shift), want,
                                   rtol=1e-4)
    big = np.where(mask, x, 1e6)   # what lies outside the mask changes nothing inside it
    np.testing.assert_allclose(np.asarray(masked_whiten(jnp.asarray(big), jnp.asarray(mask)))[mask],
                               np.asarray(masked_whiten(jnp.asarray(x), jnp.asarray(mask)))[mask], rtol=1e-5)


def test_rollout_rewards_put_the_score_on_the_last_completion_token():
    lp = np.log(np.full((2, 5), 0.5))
    ref = np.log(np.full((2, 5), 0.25))
    mask = np.array([[0, 1, 1, 1, 0], [0, 0, 1, 0, 0]], np.float32)
    out = rollout_advantages(lp, ref, np.zeros((2, 5)), np.array([2.0, -1.0]), mask, kl_coef=0.1)
    k1 = np.log(2.0)   # log 0.5 - log 0.25
    np.testing.assert_allclose(out["kl"], k1 * mask, rtol=1e-6)
    np.testing.assert_allclose(out["rewards"], -0.1 * k1 * mask + np.array([[0, 0, 0, 2.0, 0], [0, 0, -1.0, 0, 0]]),
                               rtol=1e-6)
    assert not out["advantages"][mask == 0].any()
    np.testing.assert_allclose(kl_penalty(jnp.log(0.5), jnp.log(0.25), "k3"), 0.5 - np.log(0.5) - 1, rtol=1e-6)
    with pytest.raises(ValueError, match="estimator='k2'"):
        kl_penalty(jnp.zeros(2), jnp.zeros(2), "k2")


@pytest.mark.parametrize("padded", [False, True])
def test_ppo_loss_equals_trl(padded):
    torch = pytest.importorskip("torch")
    r = np.random.default_rng(3)
    shape = (4, 6)
    old = -r.random(shape) * 2
    new = old + r.normal(size=shape) * 0.3
    adv, values, returns = r.normal(size=shape), r.normal(size=shape), r.normal(size=shape)
    vpred = values + r.normal(size=shape) * 0.4
    mask = (r.random(shape) > 0.3) if padded else np.ones(shape, bool)
    loss, m = ppo_loss(*(jnp.asarray(x) for x in (new, old, adv, vpred, values, returns, mask)), cliprange=0.2,
                       cliprange_value=0.2, vf_coef=0.1)
    t = lambda x: torch.tensor(x, dtype=torch.float64)                        # noqa: E731
    want, pg, vf = trl_loss(t(new), t(old), t(adv), t(vpred), t(values), t(returns), t(mask.astype(float)), 0.2, 0.2, 0.1)
    assert float(loss) == pytest.approx(float(want), rel=1e-5)
    assert float(m["loss/policy"]) == pytest.approx(float(pg), rel=1e-5)
    assert float(m["loss/value"]) == pytest.approx(float(vf), rel=1e-5)
    assert float(m["weight_sum"]) == mask.sum() and 0 < float(m["policy/clipfrac"]) < 1


def test_ppo_loss_gradient_at_ratio_one_is_the_policy_gradient():
    lp = jnp.asarray([[-1.0, -2.0, -0.5]])
    adv = jnp.asarray([[1.0, -2.0, 0.5]])
    mask = jnp.asarray([[1.0, 1.0, 0.0]])
    zeros = jnp.zeros_like(lp)
    g = jax.grad(lambda x: ppo_loss(x, lp, adv, zeros, zeros, zeros, mask, vf_coef=0.0)[0])(lp)
    np.testing.assert_allclose(g, -adv * mask / 2, rtol=1e-6)
    with pytest.raises(ValueError, match="every input"):
        ppo_loss(lp, lp[:, :2], adv, zeros, zeros, zeros, mask)
    half = ppo_loss(lp, lp, adv, zeros, zeros, zeros, mask * 0.5)[1]["loss/policy"]   # the mask is a weight
    assert float(half) == pytest.approx(float(ppo_loss(lp, lp, adv, zeros, zeros, zeros, mask)[1]["loss/policy"]))


# --------------------------------------------------------------------------------------------- runner
@pytest.fixture(scope="module")
def reward_model(tmp_path_factory, tok_dir, base):
    """A tiny GPT-2 reward model (a random score head of one output) with the chat tokenizer."""
    directory = tmp_path_factory.mktemp("ppo_rm") / "rm"
    cfg = dataclasses.replace(read_model_config(base), num_labels=1)   # conftest's CHAT_MODEL
    mesh = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    _, params, _ = create_sharded(lambda: build_model(cfg, rngs=nnx.Rngs(1)), mesh, MeshConfig().rules)
    save_model_folder(directory, cfg, params)
    load_tokenizer(tok_dir).save(directory / "tokenizer")
    return directory


def _cfg(base, **kw) -> PPOConfig:
    data = PromptDataConfig(synthetic=(("letter_count", 1.0),), train_size=40, test_size=8, batch_size=16,
                            max_prompt_len=40)
    kw = {"max_new_tokens": 16, "steps": 4, "log_every": 1, "eval_generate": 8, "eval_on_start": False,
          "num_ppo_epochs": 2, "num_mini_batches": 2, "mesh": MeshConfig(data=8),
          "optim": OptimConfig(lr=3e-3, warmup_steps=0, weight_decay=0.0), **kw}
    return PPOConfig(init_from=str(base), data=data, **kw)


def _rows(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_ppo_scores_with_a_reward_model_as_it_was_trained(base, reward_model, tmp_path):
    """Against a reward model: each reply is scored as its conversation rendered the reward model's way
    (end of turn, eos) and read at the last token; the KL to the reference grows from 0; the run folder
    loads as the policy alone (the value model's leaves are passed over); the reward model's step is
    recorded for a resume."""
    from lmforge.align.reward import sequence_rewards
    from lmforge.data.chat import chat_template_for
    from lmforge.data.preference import conversation_rows
    from lmforge.eval.chat import prompt_messages

    cfg = _cfg(base, reward_from=str(reward_model), steps=8)
    out = run_ppo(cfg, tmp_path / "run")
    rows = _rows(tmp_path / "run")
    kl = [r["train/objective/kl"] for r in rows if "train/objective/kl" in r]
    assert kl[0] == pytest.approx(0.0, abs=1e-5) and kl[-1] > 0.05, kl
    assert all(0 <= r["train/policy/clipfrac"] <= 1 and r["train/weight_sum"] > 0 for r in rows if "train/loss" in r)
    assert out["final/step"] == 8 and "final/score" in out
    assert json.loads((tmp_path / "run" / "reward.json").read_text())["source"] == str(reward_model)
    mesh = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    assert set(load_params(tmp_path / "run", mesh).params) == set(load_params(base, mesh).params)
    # the held-out replies' scores, recomputed from their text by the reward model's own path
    samples = [json.loads(x) for x in (tmp_path / "run" / "eval_samples.jsonl").read_text().splitlines()]
    from lmforge.align.sft import read_items
    _, test = read_items(cfg)
    tok = load_tokenizer(tmp_path / "run" / "tokenizer")
    convs = [prompt_messages(it["messages"]) + [{"role": "assistant", "content": s["reply"]}]
             for it, s in zip(test, samples)]
    rm = load_params(reward_model, mesh)
    batch = conversation_rows(convs, chat_template_for(tok), cfg.seq_len)
    with jax.set_mesh(mesh), axis_rules(MeshConfig().rules):
        want, _ = sequence_rewards(rm.graphdef, rm.params, jnp.asarray(batch["tokens"]),
                                   jnp.asarray(batch["segment_ids"]))
    np.testing.assert_allclose([s["score"] for s in samples], want, rtol=1e-4, atol=1e-5)


def test_ppo_learns_a_reward(base, tmp_path):
    """Ten rollouts of 64 at a high learning rate raise a rule's reward (the share of 'e' in the
    completion) of a random tiny model on its own samples. The value model starts at 0 everywhere and
    learns beside the policy (a random one makes GAE's lam < 1 bootstrap from noise; kl_coef 0 here)."""
    def e_share(task, completion, answer):
        return completion.count("e") / max(len(completion), 1)
    zero = tmp_path / "zero_value"
    mesh = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    start = load_params(base, mesh, num_labels=1)
    save_model_folder(zero, start.cfg, {**start.params, "score": jnp.zeros_like(start.params["score"])})
    load_tokenizer(base / "tokenizer").save(zero / "tokenizer")
    cfg = _cfg(base, value_from=str(zero), steps=20, kl_coef=0.0, lam=1.0, num_mini_batches=1, eval_generate=8)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, batch_size=64))
    out = run_ppo(cfg, tmp_path / "run", reward_fn=e_share)
    scores = [r["train/objective/scores"] for r in _rows(tmp_path / "run") if "train/objective/scores" in r]
    assert len(scores) == 10 and np.mean(scores[-3:]) > np.mean(scores[:3]) + 0.01, scores   # measured: 0.094 -> 0.113
    assert "final/accuracy" in out   # held-out accuracy: the task grader's, whatever scores the rollouts
    assert out["final/reward_n"] == 8 and 0 <= out["final/reward"] <= 1   # and the held-out replies' reward


def test_ppo_resumes_exactly_between_two_mini_batches(base, reward_model, tmp_path):
    """Six steps straight equal three steps, a stop in the middle of the first rollout's four updates
    (its rows and advantages are in the checkpoint) and three more; with LoRA on the policy, against its
    base, and the value model trained whole."""
    cfg = _cfg(base, reward_from=str(reward_model), steps=6, checkpoint_every=3, eval_generate=0,
               lora=LoRAConfig(rank=4), optim=OptimConfig(lr=1e-2, warmup_steps=0, weight_decay=0.0, decay_steps=6))
    straight = run_ppo(cfg, tmp_path / "straight")
    run_ppo(dataclasses.replace(cfg, steps=3), tmp_path / "split")
    resumed = run_ppo(cfg, tmp_path / "split")
    assert resumed["final/step"] == straight["final/step"] == 6
    a = [r for r in _rows(tmp_path / "straight") if "train/loss" in r]
    b = [r for r in _rows(tmp_path / "split") if "train/loss" in r]
    assert [r["step"] for r in b] == list(range(1, 7))
    for x, y in zip(a, b):
        assert x["train/loss"] == pytest.approx(y["train/loss"], rel=1e-5)
        assert x["train/loss/value"] == pytest.approx(y["train/loss/value"], rel=1e-5)
    mesh = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    p1, p2 = load_params(tmp_path / "straight", mesh).params, load_params(tmp_path / "split", mesh).params
    for x, y in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6)
    assert json.loads((tmp_path / "straight" / "base.json").read_text())["source"] == str(base)


def test_a_task_answered_through_a_tool_is_refused():
    """PPO's rollouts run no tools either (its data is GRPO's PromptDataConfig): a calculator task is refused."""
    with pytest.raises(ValueError, match="task calculator is answered through the calculator tool, but rollouts do "
                                         "not run tools"):
        PPOConfig(data=PromptDataConfig(synthetic=(("calculator", 1.0),), batch_size=8))


def test_ppo_config_errors(base, reward_model, tmp_path):
    with pytest.raises(ValueError, match="data.batch_size=8 does not split into num_mini_batches=3"):
        PPOConfig(num_mini_batches=3)
    with pytest.raises(ValueError, match="kl_estimator='k2'"):
        PPOConfig(kl_estimator="k2")
    with pytest.raises(ValueError, match=r"gamma=1.5, lam=0.95: expected each in \[0, 1\]"):
        PPOConfig(gamma=1.5)
    with pytest.raises(ValueError, match="prefetch=2"):
        PPOConfig(prefetch=2)
    with pytest.raises(ValueError, match="reference_from=x is read only with kl_coef > 0"):
        PPOConfig(reference_from="x", kl_coef=0.0)
    with pytest.raises(ValueError, match="reward_from=.* is a language model; expected a reward model"):
        _cfg(base, reward_from=str(base)).check_runnable()
    with pytest.raises(ValueError, match="reward_from: .*nowhere is not a folder"):
        _cfg(base, reward_from=str(tmp_path / "nowhere")).check_runnable()
    with pytest.raises(ValueError, match=r"data.batch_size / num_mini_batches=4 must be divisible"):
        run_ppo(_cfg(base, reward_from=str(reward_model), num_mini_batches=4), tmp_path / "rows")
    assert not (tmp_path / "rows" / "checkpoints").exists()


def test_ppo_experiment_smoke_through_the_cli(base, reward_model, tmp_path, capsys):
    from lmforge.cli.main import main

    run = tmp_path / "run"
    main(["run", "experiments/align/ppo_hh.py:smoke", f"init_from={base}", f"reward_from={reward_model}",
          "--workdir", str(run)])
    rows = _rows(run)
    assert any("train/objective/scores" in r for r in rows) and any("eval/score" in r for r in rows)
    captured = capsys.readouterr()
    assert "held-out score" in captured.out + captured.err


def test_rollouts_state_round_trips_and_refuses_a_changed_shape():
    """The rollout half trained on comes back bit for bit; resumed under another mini-batch split it is
    refused in one line."""
    from types import SimpleNamespace

    from lmforge.align.ppo import PPORollouts

    tok, template = SimpleNamespace(eos_id=2), SimpleNamespace(stop_ids=(3,))
    cfg = PPOConfig(data=PromptDataConfig(synthetic=(("letter_count", 1.0),), batch_size=8), num_ppo_epochs=2,
                    num_mini_batches=2, max_new_tokens=4)
    r = np.random.default_rng(0)
    buffer = {k: r.normal(size=(8, cfg.seq_len)).astype(np.float32) for k in
              ("inputs", "targets", "segment_ids", "mask", "logprobs", "values", "advantages", "returns")}
    a = PPORollouts(cfg, [{}] * 10, [[1]] * 10, tok, template, None, None, None)
    a.buffer, a.count, a.position = buffer, 3, 1
    state = a.get_state()
    b = PPORollouts(cfg, [{}] * 10, [[1]] * 10, tok, template, None, None, None)
    b.set_state(state)
    assert (b.count, b.position) == (3, 1) and all(np.array_equal(b.buffer[k], v) for k, v in buffer.items())
    assert [sorted(next(b)["inputs"][:, 0]) for _ in range(3)] == [sorted(next(a)["inputs"][:, 0]) for _ in range(3)]
    c = PPORollouts(dataclasses.replace(cfg, num_mini_batches=4), [{}] * 10, [[1]] * 10, tok, template, None, None,
                    None)
    with pytest.raises(ValueError, match=r"half trained on with num_mini_batches=2 \(now 4\)"):
        c.set_state(state)


def test_sample_rows_lays_out_n_completions_of_each_prompt():
    """``sampling.n`` completions a prompt (an RLOO- or GRPO-style consumer of PPO's sampling): row r is
    prompt r // n then its completion; texts leave the stop id out; truncated rows are flagged."""
    from types import SimpleNamespace

    from lmforge.align.ppo import sample_rows
    from lmforge.infer import SamplingConfig
    from lmforge.infer.sampler import SamplerOutput

    tokens = np.array([[5, 3, 0], [6, 6, 6], [7, 3, 0], [8, 8, 3]], np.int32)
    lengths = np.array([2, 3, 2, 3], np.int32)
    z = np.zeros((4, 3), np.float32)
    sampler = SimpleNamespace(generate_ids=lambda prompts, cfg, seed: SamplerOutput(
        tokens, z, z, np.arange(3) < lengths[:, None], lengths, np.array([1, 0, 1, 1]), np.arange(4) // 2))
    tok = SimpleNamespace(decode=lambda ids: "".join(chr(96 + i) for i in ids))
    rows, got_lengths, texts, truncated = sample_rows(sampler, tok, [[1, 2], [4]], SamplingConfig(
        n=2, max_new_tokens=3, stop_token_ids=(3,)), seed=0, seq_len=6)
    assert texts == ["e", "fff", "g", "hh"] and truncated.tolist() == [False, True, False, False]
    assert rows["targets"][:, :4].tolist() == [[2, 5, 3, 0], [2, 6, 6, 6], [7, 3, 0, 0], [8, 8, 3, 0]]
    assert rows["mask"].sum(-1).tolist() == got_lengths.tolist() == [2, 3, 2, 3]


def test_ppo_with_a_reward_model_trains_and_scores_prompt_only_records(base, reward_model, tmp_path, write_jsonl):
    """TRL's prompt-only records (no reference reply) are PPO's usual data beside a reward model: the
    rollouts and the held-out replies are scored as prompt + reply (before, a conversation ending in a
    user turn could not be rendered for the reward model)."""
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"Tell me about {i}."} for i in range(40)])
    cfg = dataclasses.replace(_cfg(base, reward_from=str(reward_model), steps=2, eval_generate=4),
                              data=PromptDataConfig(path=str(prompts), batch_size=16, max_prompt_len=40,
                                                    val_fraction=0.2))
    out = run_ppo(cfg, tmp_path / "run")
    assert out["final/step"] == 2 and np.isfinite(out["final/score"])
    samples = [json.loads(x) for x in (tmp_path / "run" / "eval_samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4
