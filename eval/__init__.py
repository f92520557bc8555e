"""lmforge.eval — the evaluation harness: small functions from the sampler's output (or teacher-forced
log-likelihoods) to scores. ``lmforge eval`` (``cli/eval_cmd.py``) registers them by name.

- perplexity and bits per byte of a text over rolling windows (``perplexity``);
- generation tasks with answer extraction: GSM8K, local exact / numeric / regex tasks (``generation``,
  ``extract``);
- multiple choice by summed or per-character / per-token log-likelihood (``multiple_choice``);
- refusal rate on HH-RLHF's harmful requests with a documented phrase detector (``refusal``);
- memorisation of training documents under greedy decoding (``memorisation``);
- the batched, bucketed log-likelihood scorer they share (``scoring``);
- an lm-evaluation-harness ``LM`` over an lmforge sampler (``lmforge.eval.lm_eval_adapter``; needs
  the ``eval`` extra, so it is not imported here).
"""

import lmforge.model  # noqa: F401  (first: it imports flax without IPython, model/__init__.py)
from lmforge.eval.extract import (
    exact_match,
    extract_number,
    gsm8k_final,
    normalize_number,
    numeric_match,
    regex_extract,
    regex_match,
)
from lmforge.eval.generation import (
    GenerationItem,
    GSM8KItem,
    complete,
    generation,
    gsm8k,
    gsm8k_prompt,
    load_generation,
    load_gsm8k,
)
from lmforge.eval.jsonl import TaskFileError
from lmforge.eval.memorisation import matched_tokens, memorisation, probes
from lmforge.eval.multiple_choice import ChoiceItem, choice_predictions, load_multiple_choice, multiple_choice
from lmforge.eval.perplexity import perplexity
from lmforge.eval.refusal import REFUSAL_PATTERNS, is_refusal, load_hh_prompts, refusal, refusal_rate
from lmforge.eval.scoring import PromptLogprobs, Score, Scorer, encode_pair, encode_text, prefix_id, rolling_requests

__all__ = [
    "ChoiceItem", "GSM8KItem", "GenerationItem", "PromptLogprobs", "REFUSAL_PATTERNS", "Score", "Scorer", "TaskFileError",
    "choice_predictions", "complete", "encode_pair", "encode_text", "exact_match", "extract_number", "generation",
    "gsm8k", "gsm8k_final", "gsm8k_prompt", "is_refusal", "load_generation", "load_gsm8k", "load_hh_prompts",
    "load_multiple_choice", "matched_tokens", "memorisation", "multiple_choice", "normalize_number",
    "numeric_match", "perplexity", "prefix_id", "probes", "refusal", "refusal_rate", "regex_extract",
    "regex_match", "rolling_requests",
]
