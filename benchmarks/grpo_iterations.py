"""What GRPO's ``num_iterations`` buys: reward against rollouts drawn, for mu = 1, 2, 4 side by side
(and, with ``--spg``, ``steps_per_generation``; with ``--level sequence``, GSPO's sequence-level ratio).

    python benchmarks/grpo_iterations.py                          # mu 1 2 4, 24 rollouts each, 2 seeds
    python benchmarks/grpo_iterations.py --mu 1 2 --rollouts 40 --seeds 0 1 2 --lr 1e-3
    python benchmarks/grpo_iterations.py --mu 1 --spg 2 4 --level token sequence --loss grpo

Each run starts from the same tiny GPT-2 (the tests' ``gpt2_tiny``, 512-piece chat tokenizer
trained on Python's docs, random weights) and trains by ``lmforge.align.grpo.run_grpo`` on the
synthetic letter-counting prompts with a dense reward a random model can learn: the share of a
completion's characters that are ``e``. A run with ``mu`` takes ``rollouts * mu`` optimizer steps:
every rollout feeds ``mu`` steps, the later ones clipped against the sampling policy's log-probs
(``epsilon`` 0.2). ``--spg S`` splits each pass over a rollout into S steps of 32 / S rows
(``rollouts * mu * S`` steps); ``--level`` sets ``importance_sampling_level`` and ``--loss`` the
``loss_type``. What is compared is the reward the policy earns on its own samples (temperature 1)
against rollouts drawn — sampling is what costs in RL — and the wall time. Runs alternate over the
seeds (``seed`` is also the rollouts' sampling seed), so the variants share the machine's drift.

One JSON line per run (``mu``, ``spg``, ``level``, ``seed``, ``reward_first`` / ``reward_last``: the
mean reward of the first and last ``--window`` rollouts, ``clip_ratio``: the mean
``clip_ratio/region_mean`` of the steps after a rollout's first, ``wall_s``), then one summary line
per (``mu``, ``spg``, ``level``) with medians over seeds; the runs' own progress lines go to stdout
between them.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import tempfile
import time

import jax
from flax import nnx

from lmforge.align.grpo import GRPOConfig, PromptDataConfig, run_grpo
from lmforge.data import SourceConfig, TokenizerConfig, load_tokenizer, read_documents, train_tokenizer
from lmforge.model import ModelConfig, build_model, create_sharded
from lmforge.train.mesh import MeshConfig, make_mesh
from lmforge.train.metrics import read_metrics
from lmforge.train.optim import OptimConfig
from lmforge.weights import save_model_folder

MODEL = ModelConfig.gpt2_tiny(vocab_size=512, max_seq_len=64)


def e_share(task: str, completion: str, answer) -> float:
    """The share of the completion's characters that are 'e' (0 for an empty one)."""
    return completion.count("e") / max(len(completion), 1)


def base_folder(directory: pathlib.Path) -> pathlib.Path:
    """The tiny GPT-2 with random weights (seed 0) and a 512-piece chat tokenizer, as a model folder."""
    docs = [d for d in read_documents(SourceConfig(kind="python_docs"))[::16] if len(d) < 20_000][:30]
    train_tokenizer(TokenizerConfig(vocab_size=512), docs, directory / "tok")
    mesh = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    _, params, _ = create_sharded(lambda: build_model(MODEL, rngs=nnx.Rngs(0)), mesh, MeshConfig().rules)
    save_model_folder(directory / "base", MODEL, params)
    load_tokenizer(directory / "tok").save(directory / "base" / "tokenizer")
    return directory / "base"


def run(base: pathlib.Path, workdir: pathlib.Path, mu: int, spg: int, level: str, seed: int, args) -> dict:
    cfg = GRPOConfig(init_from=str(base), num_generations=8, max_new_tokens=16, num_iterations=mu,
                     steps_per_generation=spg, importance_sampling_level=level, loss_type=args.loss,
                     data=PromptDataConfig(synthetic=(("letter_count", 1.0),), train_size=64, test_size=8,
                                           batch_size=4, max_prompt_len=40),
                     steps=args.rollouts * mu * spg, log_every=1, eval_generate=0, eval_on_start=False, seed=seed,
                     checkpoint_every=0, optim=OptimConfig(lr=args.lr, min_lr=args.lr, warmup_steps=0, weight_decay=0.0))
    t0 = time.perf_counter()
    run_grpo(cfg, workdir, reward_fn=e_share)
    wall = time.perf_counter() - t0
    rows = [r for r in read_metrics(workdir / "metrics.jsonl") if "train/loss" in r]
    reward = [r["train/reward"] for r in rows if "train/reward" in r]   # one per rollout, at its first step
    later = [r["train/clip_ratio/region_mean"] for r in rows if "train/reward" not in r]
    w = args.window
    return {"mu": mu, "spg": spg, "level": level, "loss": args.loss, "seed": seed, "rollouts": len(reward),
            "steps": len(rows),
            "reward_first": statistics.fmean(reward[:w]), "reward_last": statistics.fmean(reward[-w:]),
            "clip_ratio": statistics.fmean(later) if later else 0.0, "wall_s": round(wall, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mu", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--spg", type=int, nargs="+", default=[1], help="steps_per_generation")
    parser.add_argument("--level", nargs="+", default=["token"], choices=["token", "sequence"],
                        help="importance_sampling_level")
    parser.add_argument("--loss", default="dapo", choices=["dapo", "grpo", "dr_grpo"], help="loss_type")
    parser.add_argument("--rollouts", type=int, default=24)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--window", type=int, default=5, help="rollouts averaged at the start and the end")
    args = parser.parse_args(argv)
    if args.rollouts < 2 * args.window:
        parser.error(f"--rollouts={args.rollouts} must be at least twice --window={args.window}")
    results = []
    variants = [(mu, spg, level) for mu in args.mu for spg in args.spg for level in args.level]
    with tempfile.TemporaryDirectory() as tmp:
        base = base_folder(pathlib.Path(tmp))
        for seed in args.seeds:
            for mu, spg, level in variants:
                r = run(base, pathlib.Path(tmp) / f"mu{mu}_spg{spg}_{level}_seed{seed}", mu, spg, level, seed, args)
                print(json.dumps(r), flush=True)
                results.append(r)
    for mu, spg, level in variants:
        mine = [r for r in results if (r["mu"], r["spg"], r["level"]) == (mu, spg, level)]
        print(json.dumps({"summary": True, "mu": mu, "spg": spg, "level": level, "loss": args.loss,
                          "device": jax.devices()[0].device_kind, "seeds": len(mine),
                          **{k: round(statistics.median(r[k] for r in mine), 4)
                             for k in ("reward_first", "reward_last", "clip_ratio", "wall_s")}}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
