"""nanoGPT's ``train_shakespeare_char`` recipe, character level, on Tiny Shakespeare.

Reads ../shared/data/tinyshakespeare.txt (override with ``data.source.path=...``); the first 90%
of the characters train, the last 10% validate, and validation always covers the whole split.

Variants:
- ``gpu`` (= default): 6 layers, 6 heads, 384 dim, block 256, batch 64, dropout 0.2, lr 1e-3 → 1e-4
  over 5000 iterations, warmup 100, beta2 0.99, bf16.
- ``cpu``: nanoGPT's CPU recipe: 4 layers, 4 heads, 128 dim, block 64, batch 12, 2000 iterations,
  no dropout, lr decay over 2000 iterations.
- ``smoke``: a few steps of a tiny model, for the tests.

    lmforge run experiments/shakespeare_char.py:cpu
    lmforge run experiments/shakespeare_char.py:gpu

Measured (the 2-core CPU machine, jax 0.10.2, `lmforge run experiments/shakespeare_char.py:cpu`,
wall time from `/usr/bin/time`, whole validation split of 111,539 targets; the run is deterministic,
so the loss repeats exactly):

    val loss   step 500: 2.2878   1000: 2.0672   1500: 1.9499   2000: 1.9024 (seed 1: 1.9070)
    wall time  140.8 s (59 ms/step) in a quiet hour; 178.5 s (76 ms/step) in a busy one

nanoGPT's own recipe in PyTorch (``benchmarks/nanogpt_reference.py``, torch 2.13 CPU, 2 threads),
run right after each of the two lmforge runs on the same machine:

    val loss   2000: 1.8857 on nanoGPT's estimate (20 random batches: the published ~1.88),
                     1.8977 on the whole validation split (the number to compare with 1.9024)
    wall time  99.6 s (47 ms/iteration), then 108.4 s (51 ms/iteration)

So on the same metric lmforge matches nanoGPT's loss to 0.005 (within seed noise: 1.9024 / 1.9070),
but the whole-split loss of the recipe is ~1.90 in both frameworks, and on this CPU XLA's step is
1.25-1.5x slower than PyTorch's. The sample printed at the end (500 characters, windowed past the
64-character block):

    CORINABELL:
    O, ell may thee may so daint a so should,
    Of he the lijos and thee, I reperenty our our thy revert.
"""

import dataclasses
import pathlib

from lmforge.data import DataConfig, SourceConfig, TokenizerConfig
from lmforge.model import ModelConfig
from lmforge.train.mesh import MeshConfig
from lmforge.train.optim import OptimConfig
from lmforge.train.pretrain import PretrainConfig
from lmforge.train.sampling import SamplingConfig

VARIANTS = ("default", "gpu", "cpu", "smoke")

DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare.txt"


def get_config(variant: str = "default") -> PretrainConfig:
    gpu = PretrainConfig(
        # nanoGPT: bias=False, tied embeddings, learned positions, GELU, pre-LayerNorm.
        model=ModelConfig.gpt2(num_layers=6, num_heads=6, embed_dim=384, mlp_dim=1536, max_seq_len=256,
                               vocab_size=0, use_bias=False, dropout=0.2, dtype="bfloat16",
                               attention="dot_product"),
        tokenizer=TokenizerConfig(kind="char"),
        data=DataConfig(source=SourceConfig(kind="text", path=str(DATA)), val_fraction=0.1, seq_len=256,
                        batch_size=64, packing="windows"),
        optim=OptimConfig(lr=1e-3, min_lr=1e-4, warmup_steps=100, decay_steps=5000, b1=0.9, b2=0.99,
                          weight_decay=0.1, grad_clip=1.0),
        mesh=MeshConfig(data=-1),
        steps=5000,
        log_every=10,
        eval_every=250,
        eval_batch_size=128,
        checkpoint_every=1000,
        sample_prompts=("\n",),
        sample=SamplingConfig(max_new_tokens=500, temperature=0.8, top_k=200),
    )
    if variant in ("default", "gpu"):
        return gpu
    cpu = dataclasses.replace(
        gpu,
        model=dataclasses.replace(gpu.model, num_layers=4, num_heads=4, embed_dim=128, mlp_dim=512,
                                  max_seq_len=64, dropout=0.0, dtype="float32", attention="xla"),
        data=dataclasses.replace(gpu.data, seq_len=64, batch_size=12),
        optim=dataclasses.replace(gpu.optim, decay_steps=2000),
        mesh=MeshConfig(data=1),
        steps=2000, eval_every=500, checkpoint_every=0,
    )
    if variant == "cpu":
        return cpu
    # smoke
    return dataclasses.replace(
        cpu, model=dataclasses.replace(cpu.model, num_layers=2, num_heads=2, embed_dim=32, mlp_dim=128),
        data=dataclasses.replace(cpu.data, seq_len=32, batch_size=8),
        optim=dataclasses.replace(cpu.optim, warmup_steps=5, decay_steps=30),
        mesh=MeshConfig(data=-1),
        steps=30, log_every=5, eval_every=15, eval_max_batches=10,
        sample=SamplingConfig(max_new_tokens=32, temperature=0.8, top_k=20),
    )
