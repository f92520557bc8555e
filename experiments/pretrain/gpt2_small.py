"""GPT-2 small's shape (12 layers, 768 dim) with its own 32,768-id tokenizer: 111.0M parameters, for GPUs.

nanoGPT's GPT-2 124M recipe except for the vocabulary: 12 layers, 12 heads, 768 dim, sequence
length 1024, dropout 0, AdamW lr 6e-4 → 6e-5, beta2 0.95, weight decay 0.1, warmup 2000 (scaled
down here with the run length), bf16 compute with fp32 master weights, cuDNN flash attention, FSDP
over all GPUs. The run trains its own 32,768-id BPE tokenizer on its data (not GPT-2's 50,257 ids
padded to 50304), so the model has 111.008M parameters (85.056M outside the embeddings;
`lmforge plan experiments/pretrain/gpt2_small.py`), and its FLOPs and loss are not nanoGPT's.
For nanoGPT's 124.476M shape, bind ``model.vocab_size=50304`` (the ids past the tokenizer's are
never used, as nanoGPT's padding rows are), or on a corpus large enough train a GPT-2-sized
tokenizer with ``tokenizer.vocab_size=50257 model.vocab_multiple=64`` (the Python docs are too
small for it: SentencePiece stops at about 40.7k ids there).

The default data is the embedded Python documentation (so the recipe runs anywhere); point it at
a real corpus for a real run:

    lmforge run experiments/pretrain/gpt2_small.py data.source.kind=jsonl data.source.path=/data/owt/*.jsonl
    lmforge run experiments/pretrain/gpt2_small.py model.vocab_size=50304   # nanoGPT's 124.5M shape
    lmforge run experiments/pretrain/gpt2_small.py:smoke     # tiny CPU check (tests)
"""

import dataclasses

from lmforge.data import DataConfig, SourceConfig, TokenizerConfig
from lmforge.model import ModelConfig
from lmforge.train.mesh import MeshConfig
from lmforge.train.optim import OptimConfig
from lmforge.train.pretrain import PretrainConfig

VARIANTS = ("default", "smoke")


def get_config(variant: str = "default") -> PretrainConfig:
    cfg = PretrainConfig(
        model=ModelConfig.gpt2_small(vocab_size=0, vocab_multiple=128, dtype="bfloat16", attention="cudnn",
                                     remat="dots_no_batch"),
        tokenizer=TokenizerConfig(vocab_size=32768),
        data=DataConfig(source=SourceConfig(kind="python_docs"), seq_len=1024, batch_size=32, packing="pack"),
        optim=OptimConfig(lr=6e-4, min_lr=6e-5, warmup_steps=200, b2=0.95, weight_decay=0.1),
        mesh=MeshConfig(data=1, fsdp=-1),
        steps=5000, log_every=20, eval_every=500, eval_max_batches=50, checkpoint_every=1000,
    )
    if variant == "smoke":
        cfg = dataclasses.replace(
            cfg, model=ModelConfig.gpt2_tiny(vocab_size=0, vocab_multiple=128, max_seq_len=64),
            tokenizer=TokenizerConfig(vocab_size=512),
            data=dataclasses.replace(cfg.data, seq_len=64, batch_size=8),
            optim=dataclasses.replace(cfg.optim, warmup_steps=2),
            mesh=MeshConfig(data=-1), steps=6, log_every=2, eval_every=0, eval_max_batches=4, checkpoint_every=0)
    return cfg
