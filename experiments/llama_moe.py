"""A Mixtral-style mixture-of-experts Llama (8 experts, top-2) on the Python docs, one CPU, no download.

The ``llama_moe`` preset shrunk to quickstart size: every block's FFN is 8 SwiGLU experts of
width 256 with top-2 routing, capacity factor 1.25 (overflowing tokens ride the residual), the
Switch load-balancing loss (weight 0.01) and the ST-MoE router z-loss (weight 0.001). Data and
tokenizer are the quickstart's (pydoc topics + stdlib docstrings, BPE 2048).
``train/moe_aux_loss`` (1.0 = perfectly balanced), ``train/moe_z_loss`` and ``train/moe_dropped``
(fraction of token-to-expert assignments over capacity) are logged beside the loss.

Variants:
- ``default``: 4 layers, 128 dim, 8 experts top-2 (3.87M parameters with the 2048-id embeddings,
  1.51M active per token), seq 128, batch 16, 600 steps.
- ``dropless``: the same with ``moe_capacity_factor=0`` (sort + grouped matmuls, nothing dropped).
- ``smoke``: 2 layers, 64 dim, 4 experts top-2, 40 steps, for the tests.

    lmforge run experiments/llama_moe.py
    lmforge run experiments/llama_moe.py:smoke                   # what the tests run
    lmforge run experiments/llama_moe.py:smoke mesh.expert=2 mesh.host_devices=2   # experts over 2 CPU devices

On a pod, expert parallelism is one binding: ``mesh.expert=8`` (with ``mesh.data=-1``) splits the
experts over 8 devices and uses the same devices as data parallel outside the expert layers.

Measured (the 2-core CPU machine, jax 0.10.2, busy with other test runs, wall time from
`/usr/bin/time`):

    lmforge run experiments/llama_moe.py:smoke          (1 CPU device, 0.30M parameters)
    53.5 s wall in all (33.3 s user), 48 s of it in the runner
    step           5       10      20      30      40
    train loss   6.124   5.473   4.829   4.800   4.665     val loss 4.828 (step 20), 4.683 (step 40)
    moe_aux_loss 1.023   1.058   1.015   1.017   1.039     (1.0 = balanced)
    moe_z_loss   1.836   1.233   0.611   0.525   0.579
    moe_dropped  0.083   0.265   0.098   0.157   0.126     (fraction over capacity 1.25)

The default variant ran at ~1.7 s/step over its first 30 steps on the same busy machine (the
capacity einsums are heavy for XLA:CPU), so its 600 steps take ~17 minutes there; its final
numbers have not been measured yet.
"""

import dataclasses

from lmforge.data import DataConfig, SourceConfig, TokenizerConfig
from lmforge.model import ModelConfig
from lmforge.train.mesh import MeshConfig
from lmforge.train.optim import OptimConfig
from lmforge.train.pretrain import PretrainConfig
from lmforge.infer import SamplingConfig

VARIANTS = ("default", "dropless", "smoke")


def get_config(variant: str = "default") -> PretrainConfig:
    cfg = PretrainConfig(
        model=ModelConfig.llama_moe(num_layers=4, num_heads=4, num_kv_heads=2, embed_dim=128, mlp_dim=256,
                                    max_seq_len=128, vocab_size=0, vocab_multiple=64, moe_capacity_factor=1.25),
        tokenizer=TokenizerConfig(vocab_size=2048),
        data=DataConfig(source=SourceConfig(kind="python_docs"), seq_len=128, batch_size=16, packing="pack"),
        optim=OptimConfig(lr=2e-3, min_lr=2e-4, warmup_steps=50, b2=0.99, weight_decay=0.1),
        mesh=MeshConfig(data=-1),
        steps=600,
        log_every=10,
        eval_every=150,
        checkpoint_every=300,
        sample_prompts=("The with statement", "A list comprehension"),
        sample=SamplingConfig(max_new_tokens=60, temperature=0.7, top_k=40, top_p=0.95),
    )
    if variant == "dropless":
        return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, moe_capacity_factor=0.0))
    if variant == "smoke":
        return dataclasses.replace(
            cfg,
            model=dataclasses.replace(cfg.model, num_layers=2, num_heads=2, num_kv_heads=2, embed_dim=64,
                                      mlp_dim=128, max_seq_len=64, num_experts=4),
            tokenizer=TokenizerConfig(vocab_size=512),
            data=dataclasses.replace(cfg.data, seq_len=64, batch_size=8),
            optim=OptimConfig(lr=3e-3, min_lr=3e-4, warmup_steps=5),
            steps=40, log_every=5, eval_every=20, eval_max_batches=8, checkpoint_every=20,
            sample_prompts=("The with statement",),
            sample=SamplingConfig(max_new_tokens=16, temperature=0.7, top_k=20, top_p=0.95),
        )
    return cfg
