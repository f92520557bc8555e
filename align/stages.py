"""What a multi-stage post-training recipe (``lmforge.align.interrogation``, ``lmforge.align.cai_privacy``)
does between its stages: fine-tune (SFT or DPO) on data it just made, load a stage's run folder as a chat
model, and keep its records as JSON / JSON lines so that a re-run skips what is finished.

Each stage is a normal run folder under the recipe's workdir (``lmforge chat WORKDIR/<stage>`` talks to
it); a stage with ``final.json`` is not trained again, an unfinished one resumes from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib

import jax

from lmforge.model import LoRAConfig
from lmforge.model.logprobs import VOCAB_CHUNK, check_vocab_chunk
from lmforge.train import distributed
from lmforge.train.mesh import MeshConfig
from lmforge.train.optim import OptimConfig


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """One fine-tuning stage (the fields of ``SFTConfig`` / ``DPOConfig`` that differ between stages). The
    default optimizer is an SFT one for small models; give a DPO stage its own (a smaller learning rate)."""
    steps: int = 300
    optim: OptimConfig = OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=20, weight_decay=0.0)
    lora: LoRAConfig = LoRAConfig()
    batch_size: int = 16
    log_every: int = 10
    eval_every: int = 0
    checkpoint_every: int = 0


@dataclasses.dataclass(frozen=True)
class RecipeConfig:
    """The fields every multi-stage recipe's config shares (interrogation, Constitutional AI, RAG); theirs
    come after these. Raises ValueError for a bad ``vocab_chunk`` (a subclass calls ``super().__post_init__()``)."""
    init_from: str = ""              # the pretrained model: a run folder, a model folder or a transformers folder
    eval_max_new_tokens: int = 32    # greedy held-out answers
    mesh: MeshConfig = MeshConfig()
    seed: int = 0
    vocab_chunk: int = VOCAB_CHUNK   # the stages' loss: logits columns at a time; 0 → all V at once (SFTConfig)

    def __post_init__(self):
        check_vocab_chunk(self.vocab_chunk)


def dumps(value) -> str:
    """Indented JSON with non-finite floats as null (a rate over no records is NaN; JSON has none)."""
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        return [clean(x) for x in v] if isinstance(v, (list, tuple)) else v
    return json.dumps(clean(value), indent=2, allow_nan=False)


def write_json(path: pathlib.Path, value) -> None:
    """``dumps(value)`` to ``path`` (process 0 only)."""
    if jax.process_index() == 0:
        pathlib.Path(path).write_text(dumps(value) + "\n")


def write_jsonl(path: pathlib.Path, records) -> None:
    """One JSON object per line (process 0 only)."""
    if jax.process_index() == 0:
        with open(path, "w") as f:
            for r in records:
                f.write(json.dumps(r) + "\n")


def read_jsonl(path: pathlib.Path, expected: int) -> list[dict] | None:
    """The records of ``path`` when it exists and holds ``expected`` of them (a finished step), else None."""
    path = pathlib.Path(path)
    if not path.is_file():
        return None
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return records if len(records) == expected else None


def write_data(data_dir: pathlib.Path, files: dict[str, list]) -> None:
    """Each ``{file name: records}`` as JSON lines in ``data_dir`` (process 0), then a barrier, so that every
    process reads the files a stage trains on only once they are written."""
    if jax.process_index() == 0:
        data_dir.mkdir(parents=True, exist_ok=True)
        for file, records in files.items():
            write_jsonl(data_dir / file, records)
    distributed.barrier(f"write {data_dir}")


def check_recipe_start(init_from: str, seq_len: int, recipe: str) -> None:
    """What a multi-stage ``recipe`` (``"RAG"``, for the errors) checks before anything is written:
    ``init_from`` names a language model's weights source, and the recipe's ``seq_len`` fits that
    model's ``max_seq_len`` (a source that records no model is not checked for it). Raises
    ValueError naming the key to change."""
    from lmforge.weights import (WeightsError, check_init_from, refuse_reward_model,   # pylint: disable=import-outside-toplevel
                                 source_model_config)

    check_init_from(init_from, f"{recipe} fine-tunes a pretrained model with chat specials")
    refuse_reward_model(init_from, recipe)
    try:
        longest = source_model_config(init_from).max_seq_len
    except WeightsError:
        return
    if seq_len > longest:
        raise ValueError(f"seq_len={seq_len} exceeds the max_seq_len={longest} of init_from={init_from}'s model; "
                         f"expected seq_len <= {longest}")


def _finished(run: pathlib.Path, name: str) -> dict | None:
    """A stage's final metrics when ``run/final.json`` exists (the stage is skipped), else None."""
    final = run / "final.json"
    if not final.is_file():
        return None
    print(f"{name}: finished ({final}); skipped", flush=True)
    return json.loads(final.read_text())


def sft_stage(stage: StageConfig, name: str, init_from: str, train_convs, held_convs, workdir: pathlib.Path, *,
              seq_len: int, mesh: MeshConfig = MeshConfig(), seed: int = 0, vocab_chunk: int = VOCAB_CHUNK,
              overflow: str = "truncate") -> dict:
    """Fine-tunes ``init_from`` on ``train_convs`` (held-out loss on ``held_convs``) in ``workdir/name`` with
    ``lmforge.align.sft.run_sft``; returns its final metrics. Skipped when ``workdir/name/final.json`` exists;
    the conversations are written to ``workdir/<name>_data/``; ``held_convs`` may be empty (no held-out loss).
    ``overflow``: what happens to a conversation past ``seq_len`` (``ChatDataConfig.overflow``: cut or
    dropped). Raises ValueError as ``run_sft``."""
    from lmforge.align.sft import ChatDataConfig, SFTConfig, run_sft   # pylint: disable=import-outside-toplevel

    run = workdir / name
    if (done := _finished(run, name)) is not None:
        return done
    data_dir = workdir / f"{name}_data"
    write_data(data_dir, {file: [{"messages": c} for c in convs]
                          for file, convs in (("train.jsonl", train_convs), ("heldout.jsonl", held_convs))})
    sft = SFTConfig(init_from=init_from, steps=stage.steps, seed=seed, log_every=stage.log_every,
                    eval_every=stage.eval_every, checkpoint_every=stage.checkpoint_every,
                    data=ChatDataConfig(path=str(data_dir / "train.jsonl"), format="messages",
                                        test_path=str(data_dir / "heldout.jsonl"), test_size=0, seq_len=seq_len,
                                        batch_size=stage.batch_size, overflow=overflow, seed=seed),
                    optim=stage.optim, lora=stage.lora, mesh=mesh, eval_generate=0, vocab_chunk=vocab_chunk)
    print(f"{name}: SFT from {init_from} on {len(train_convs)} conversations, {stage.steps} steps", flush=True)
    metrics = run_sft(sft, run)
    write_json(run / "final.json", metrics)
    return metrics


def dpo_stage(stage: StageConfig, name: str, init_from: str, pairs, workdir: pathlib.Path, *, seq_len: int,
              beta: float = 0.1, soft_labels: bool = False, val_fraction: float = 0.1,
              mesh: MeshConfig = MeshConfig(), seed: int = 0, vocab_chunk: int = VOCAB_CHUNK) -> dict:
    """DPO (``lmforge.align.dpo.run_dpo``) from ``init_from`` against itself on ``pairs`` (TRL-format records:
    ``prompt`` / ``chosen`` / ``rejected``, e.g. ``lmforge.align.constitutional.preference_pairs``), written
    to ``workdir/<name>_data/pairs.jsonl``, in ``workdir/name``; ``val_fraction`` of them held out;
    ``soft_labels``: each pair's ``p_chosen`` is the sigmoid loss's target (``DPOConfig.soft_labels``). Returns
    the final metrics; skipped when ``workdir/name/final.json`` exists. ``stage.optim`` is used as given:
    DPO wants a far smaller learning rate than SFT (``DPOConfig`` defaults to 1e-5). Raises ValueError for
    fewer than 2 pairs, and as ``run_dpo``."""
    from lmforge.align.dpo import DPOConfig, PreferenceDataConfig, run_dpo   # pylint: disable=import-outside-toplevel

    run = workdir / name
    if (done := _finished(run, name)) is not None:
        return done
    if len(pairs) < 2:
        raise ValueError(f"{name}: {len(pairs)} preference pairs; expected >= 2 to train DPO on")
    data_dir = workdir / f"{name}_data"
    write_data(data_dir, {"pairs.jsonl": pairs})
    dpo = DPOConfig(init_from=init_from, steps=stage.steps, seed=seed, log_every=stage.log_every,
                    eval_every=stage.eval_every, checkpoint_every=stage.checkpoint_every, beta=beta,
                    soft_labels=soft_labels,
                    data=PreferenceDataConfig(path=str(data_dir / "pairs.jsonl"), seq_len=seq_len,
                                              batch_size=stage.batch_size, val_fraction=val_fraction, seed=seed),
                    optim=stage.optim, lora=stage.lora, mesh=mesh, vocab_chunk=vocab_chunk)
    print(f"{name}: DPO from {init_from} on {len(pairs)} pairs" + (" (soft labels)" if soft_labels else "")
          + f", {stage.steps} steps", flush=True)
    metrics = run_dpo(dpo, run)
    write_json(run / "final.json", metrics)
    return metrics


def chat_model(mesh_cfg: MeshConfig, run: pathlib.Path):
    """(sampler, template) of a stage's run folder, or of any weights source (a model folder, a
    transformers folder: its tokenizer where ``lmforge.data.tokenizer.tokenizer_dir`` finds it)."""
    # pylint: disable=import-outside-toplevel
    from lmforge.data import load_tokenizer
    from lmforge.data.chat import chat_template_for
    from lmforge.data.tokenizer import tokenizer_dir
    from lmforge.infer import Sampler
    from lmforge.train.mesh import make_mesh
    from lmforge.weights import load_params
    mesh = make_mesh(mesh_cfg)
    loaded = load_params(run, mesh, rules=mesh_cfg.rules)
    tok = load_tokenizer(tokenizer_dir(pathlib.Path(run)))
    return Sampler(loaded.graphdef, loaded.params, tok, loaded.cfg, mesh, mesh_cfg.rules), chat_template_for(tok)


__all__ = ["StageConfig", "chat_model", "dpo_stage", "dumps", "read_jsonl", "sft_stage", "write_data",
           "write_json", "write_jsonl"]
