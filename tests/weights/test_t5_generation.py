"""A transformers T5 folder samples as transformers generates: its encoder input ends with ``</s>`` (the
T5 tokenizer's post-processor appends it, and every T5 was trained so); without it greedy decoding of the
same weights parted from transformers at the first token (an audit's finding, 2026-12-03)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs CPU torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")


def t5_folder(path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Metaspace()
    tk.decoder = decoders.Metaspace()
    tk.train_from_iterator(["import numpy as np", "def foo(x): return x + 1", "print the sum of a list"] * 20,
                           trainers.BpeTrainer(vocab_size=120, special_tokens=["<pad>", "</s>", "<unk>"],
                                               show_progress=False))
    tk.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="</s>", pad_token="<pad>",
                                                unk_token="<unk>")
    torch.manual_seed(0)
    model = transformers.T5ForConditionalGeneration(transformers.T5Config(
        vocab_size=tk.get_vocab_size(), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, relative_attention_num_buckets=8,
        relative_attention_max_distance=20, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)).eval()
    with torch.no_grad():   # random weights of a larger scale: greedy tokens that depend on the input
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    model.save_pretrained(path)
    fast.save_pretrained(path)
    # transformers 5 saves a T5 tied (its lm_head as shared.weight): what the folder holds is the reloaded model
    return transformers.T5ForConditionalGeneration.from_pretrained(path).eval(), fast


def test_a_transformers_t5_samples_as_transformers_generates(tmp_path):
    from lmforge.cli.eval_cmd import load_sampler
    from lmforge.infer import SamplingConfig

    model, fast = t5_folder(tmp_path / "t5")
    prompts = ["import numpy as np", "def foo(x): return x"]
    sampler = load_sampler(tmp_path / "t5", "model")
    ours = sampler.completions(prompts, SamplingConfig(max_new_tokens=8, temperature=0.0))
    for prompt, got in zip(prompts, ours):
        enc = fast(prompt, return_tensors="pt")
        assert enc.input_ids[0, -1].item() == 1   # the tokenizer's </s>
        with torch.no_grad():
            theirs = model.generate(**enc, max_new_tokens=8, do_sample=False)[0, 1:].tolist()   # after the start id
        theirs = theirs[:theirs.index(1)] if 1 in theirs else theirs
        assert got.tokens[:len(theirs)] == theirs and len(theirs) > 0, (prompt, got.tokens, theirs)
    without = load_sampler(tmp_path / "t5", "model")
    without.encoder_eos = False   # the old behaviour: the same weights part from transformers
    assert [c.tokens for c in without.completions(prompts, SamplingConfig(max_new_tokens=8, temperature=0.0))] \
        != [c.tokens for c in ours]
