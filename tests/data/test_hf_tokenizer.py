"""Hugging Face tokenizer folders and chat templates (data/hf_tokenizer.py) against transformers itself:
the same rendered prompt, the same ids and the same assistant mask for a GPT-2-style byte-level BPE
(ChatML template) and a Llama-style byte-fallback BPE (Llama 2 and Llama 3 templates), built
offline with the ``tokenizers`` library and saved by ``PreTrainedTokenizerFast.save_pretrained``;
``load_tokenizer`` tells them from lmforge's char ``tokenizer.json``; an exported lmforge tokenizer
comes back with the same chat ids; a run can start from a transformers folder."""

import dataclasses
import json
import pathlib
import shutil

import numpy as np
import pytest

from chat_templates import CHATML_TOOLS

from lmforge.data.chat import ChatFormat, chat_template_for
from lmforge.data.hf_tokenizer import HFChatTemplate, HFTokenizer
from lmforge.data.tokenizer import CharTokenizer, load_tokenizer

transformers = pytest.importorskip("transformers", reason="parity tests need transformers")
tokenizers = pytest.importorskip("tokenizers")
transformers.utils.logging.set_verbosity_error()

CORPUS = [pathlib.Path(transformers.__file__).with_name("trainer.py").read_text()[:60_000]]
CONV = [{"role": "system", "content": "You are terse. Answer in <10 words & no HTML."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4, I think."},
        {"role": "user", "content": "And 3+3? 🙂 Ünïcödé"},
        {"role": "assistant", "content": "6.\n\nDone"}]

CHATML_GEN = (
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}{{ raise_exception('bad role ' + message['role']) }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}{{ '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
# The same template as the Hub writes it: no generation blocks, a default system prompt, block tags
# on their own lines (trim_blocks / lstrip_blocks), tojson, loop controls and strftime_now.
CHATML = """{% set ns = namespace(found=false) %}
{% for message in messages %}
    {% if message['role'] == 'system' %}{% set ns.found = true %}{% break %}{% endif %}
{% endfor %}
{% if not ns.found %}
{{ '<|im_start|>system\\nYou are a helpful assistant. Today is ' + strftime_now('%Y-%m-%d') + '.<|im_end|>\\n' }}
{% endif %}
{% for message in messages %}
    {% if message['role'] not in ['system', 'user', 'assistant'] %}
        {{ raise_exception('bad role ' + message['role']) }}
    {% endif %}
{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}
{% endfor %}
{% if add_generation_prompt %}
{{ '<|im_start|>assistant\\n' }}
{% endif %}
{% if messages | length > 99 %}{{ messages[0] | tojson }}{% endif %}"""
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}")
LLAMA3 = """{{- bos_token }}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{{- "Today Date: " + strftime_now("%d %b %Y") + "\\n\\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}"""


def _save(tk, folder, template, tokenizer_class, **special):
    t = transformers.PreTrainedTokenizerFast(tokenizer_object=tk, chat_template=template, **special)
    shutil.rmtree(folder, ignore_errors=True)
    t.save_pretrained(folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": tokenizer_class}))
    return folder


def gpt2_style(folder: pathlib.Path, template: str | None = CHATML_GEN) -> pathlib.Path:
    """A byte-level BPE (GPT-2's pre-tokenizer and decoder) with ChatML specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.post_processor = processors.ByteLevel(trim_offsets=False)
    tk.train_from_iterator(CORPUS, trainers.BpeTrainer(
        vocab_size=500, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    return _save(tk, folder, template, "GPT2Tokenizer", bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                 unk_token="<|endoftext|>")


def llama_style(folder: pathlib.Path, template: str | None = LLAMA2) -> pathlib.Path:
    """Llama's pipeline: Metaspace (prefix "▁" on the first word), BPE with <0xNN> byte fallback, <s> added
    by the post-processor, Llama 3's header specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    meta = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)  # as SentencePiece,
    tk.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=400, show_progress=False))   # no merge spans words
    trained = json.loads(tk.to_str())["model"]
    specials = ["<unk>", "<s>", "</s>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    vocab = {p: i for i, p in enumerate(specials + [f"<0x{b:02X}>" for b in range(256)])}
    for piece in sorted(trained["vocab"], key=trained["vocab"].get):
        vocab.setdefault(piece, len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in trained["merges"]]
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tk.pre_tokenizer = meta
    tk.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                    decoders.Strip(" ", 1, 0)])
    tk.add_special_tokens(specials)
    tk.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                      special_tokens=[("<s>", 1)])
    return _save(tk, folder, template, "LlamaTokenizer", bos_token="<s>", eos_token="</s>", unk_token="<unk>")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf_tok")
    return {"gpt2": gpt2_style(root / "gpt2"), "llama": llama_style(root / "llama")}


def _hf(folder):
    return transformers.AutoTokenizer.from_pretrained(folder)


TEXTS = ["Hello  world", "  two leading spaces\n\tand a tab, digits 12345\n\n", "unicode: é ß 中文 🙂", "",
         "specials as text: <s> </s> <|im_end|> <|eot_id|>", "def f(a, b=3):\n    return {'k': [a, b]}\n"]


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_tokenizer_protocol_matches_transformers(folders, name, tmp_path):
    tok, hf = load_tokenizer(folders[name]), _hf(folders[name])
    assert isinstance(tok, HFTokenizer) and tok.vocab_size == len(hf)
    assert (tok.bos_id, tok.eos_id, tok.pad_id) == (hf.bos_token_id, hf.eos_token_id, -1)
    table = tok.token_bytes()
    for text in TEXTS:
        ids = tok.encode(text)
        assert ids == hf(text, add_special_tokens=False).input_ids, text
        # Llama's Metaspace: a "▁" is put before the text unless it starts with a space, and decoding
        # strips one leading space; token_bytes keeps it (a piece does not know it comes first)
        assert tok.decode(ids) == hf.decode(ids) == (text.removeprefix(" ") if name == "llama" else text)
        joined = b"".join(table[i] for i in ids)   # what the sampler matches stop strings against
        assert joined == (f" {text}" if name == "llama" and text and text[0] != " " else text).encode()
    assert tok.encode_batch(TEXTS) == [tok.encode(t) for t in TEXTS]
    # save / load round trip keeps ids, specials and the template; one tokenizer per folder
    (tmp_path / "tokenizer.model").write_bytes(b"stale")
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert not (tmp_path / "tokenizer.model").exists()
    assert again.encode(TEXTS[2]) == tok.encode(TEXTS[2]) and again.chat_template == tok.chat_template
    with pytest.raises(ValueError, match=r"outside the vocabulary"):
        tok.decode([tok.vocab_size])
    with pytest.raises(KeyError):
        tok.token_id("<|not a token|>")


def test_char_tokenizer_json_is_told_apart_by_content(folders, tmp_path):
    CharTokenizer("abc").save(tmp_path)
    assert isinstance(load_tokenizer(tmp_path), CharTokenizer)
    # a Llama folder ships a SentencePiece tokenizer.model beside tokenizer.json: tokenizer.json wins
    shutil.copytree(folders["llama"], tmp_path / "llama")
    (tmp_path / "llama" / "tokenizer.model").write_bytes(b"not read")
    assert isinstance(load_tokenizer(tmp_path / "llama"), HFTokenizer)
    (tmp_path / "llama" / "tokenizer.json").write_text('{"model": {"type": "BPE", "vocab": 3}}')
    with pytest.raises(ValueError, match=r"tokenizer.json: not a tokenizer.json the `tokenizers` library reads"):
        load_tokenizer(tmp_path / "llama")


@pytest.mark.parametrize("name, template", [("gpt2", CHATML_GEN), ("gpt2", CHATML), ("llama", LLAMA2),
                                            ("llama", LLAMA3)])
def test_chat_template_renders_and_tokenizes_as_transformers(folders, name, template, tmp_path):
    folder = (gpt2_style if name == "gpt2" else llama_style)(tmp_path / name, template)
    tok, hf = load_tokenizer(folder), _hf(folder)
    chat = chat_template_for(tok)
    assert isinstance(chat, HFChatTemplate) and chat.uses_generation_blocks == (template is CHATML_GEN)
    for conv in (CONV, CONV[1:], CONV[:2]):
        for gen in (False, True):
            assert chat.render(conv, add_generation_prompt=gen) == hf.apply_chat_template(
                conv, tokenize=False, add_generation_prompt=gen)
            ids, w = chat.encode(conv, add_generation_prompt=gen)
            assert ids.tolist() == hf.apply_chat_template(conv, add_generation_prompt=gen, return_dict=False)
            assert ids.dtype == np.int32 and w.dtype == np.float32 and w.shape == ids.shape
    assert chat.prompt(CONV[:4]).tolist() == hf.apply_chat_template(CONV[:4], add_generation_prompt=True,
                                                                     return_dict=False)
    ids, w = chat.encode(CONV, train_on="all")
    assert w[0] == 0 and w[1:].all()


TOOLS = [{"type": "function", "function": {"name": "calc", "description": "Evaluates arithmetic",
                                           "parameters": {"type": "object", "properties": {"x": {"type": "string"}}}}}]


def test_tools_and_tool_calls_render_and_tokenize_as_transformers(tmp_path):
    """``tools`` reach the template as ``apply_chat_template(tools=...)`` passes them; assistant
    ``tool_calls`` and ``tool`` results render as the template writes them; the calls the model wrote
    are what its loss mask covers; without tools the template's other branch renders."""
    folder = gpt2_style(tmp_path / "tools", CHATML_TOOLS)
    tok, hf = load_tokenizer(folder), _hf(folder)
    chat = chat_template_for(tok)
    call = {"type": "function", "function": {"name": "calc", "arguments": {"x": "37*91"}}}
    conv = [{"role": "user", "content": "What is 37*91?"},
            {"role": "assistant", "content": "", "tool_calls": [call, call]},
            {"role": "tool", "content": "3367"}, {"role": "tool", "content": "3367"},
            {"role": "assistant", "content": "3367."}]
    for tools in (TOOLS, None):
        for part, gen in ((conv, False), (conv[:4], True), (conv[:1], True)):
            assert chat.render(part, add_generation_prompt=gen, tools=tools) == hf.apply_chat_template(
                part, tools=tools, tokenize=False, add_generation_prompt=gen)
            assert chat.encode(part, add_generation_prompt=gen, tools=tools)[0].tolist() == hf.apply_chat_template(
                part, tools=tools, add_generation_prompt=gen, return_dict=False)
    assert "Evaluates arithmetic" in chat.render(conv, tools=TOOLS) and "Evaluates" not in chat.render(conv)
    assert chat.prompt(conv[:1], tools=TOOLS).tolist() == hf.apply_chat_template(
        conv[:1], tools=TOOLS, add_generation_prompt=True, return_dict=False)
    ids, w = chat.encode(conv, tools=TOOLS)
    learned = tok.decode(ids[w > 0].tolist())
    assert learned.count('<tool_call>\n{"name": "calc", "arguments": {"x": "37*91"}}') == 2 and "3367." in learned
    assert "<tool_response>" not in learned and "Evaluates" not in learned


def test_a_conversation_opening_with_an_assistant_turn_under_a_template_that_reads_messages_0(tmp_path):
    """Qwen2.5's template reads ``messages[0]`` outside its loop, so the empty conversation the first turn's
    mask was measured against made it fail ("the chat template refused the conversation"), stopping SFT
    on a record that opens with a greeting. Its mask now starts after the role header, as later turns'."""
    folder = gpt2_style(tmp_path / "tools", CHATML_TOOLS)
    tok, hf = load_tokenizer(folder), _hf(folder)
    chat = chat_template_for(tok)
    conv = [{"role": "assistant", "content": "Hi, how can I help?"}, {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4."}]
    for tools in (None, TOOLS):
        ids, w = chat.encode(conv, tools=tools)
        assert ids.tolist() == hf.apply_chat_template(conv, tools=tools, return_dict=False)
        assert tok.decode(ids[w > 0].tolist()) == "Hi, how can I help?<|im_end|>4.<|im_end|>"


def test_assistant_mask_from_generation_blocks_equals_transformers_and_prefixes(folders, tmp_path):
    tok, hf = load_tokenizer(folders["gpt2"]), _hf(folders["gpt2"])
    chat = chat_template_for(tok)
    ids, w = chat.encode(CONV)
    out = hf.apply_chat_template(CONV, return_dict=True, return_assistant_tokens_mask=True)
    assert ids.tolist() == out["input_ids"] and w.astype(int).tolist() == out["assistant_masks"]
    assert tok.decode(ids[w == 1]) == "4, I think.<|im_end|>6.\n\nDone<|im_end|>"
    # the same template without generation blocks: the mask derived from rendered prefixes is the same
    plain = HFChatTemplate(tok, CHATML_GEN.replace("{% generation %}", "").replace("{% endgeneration %}", ""))
    assert not plain.uses_generation_blocks
    ids2, w2 = plain.encode(CONV)
    assert np.array_equal(ids, ids2) and np.array_equal(w, w2)
    assert chat.stop_ids == plain.stop_ids == (tok.eos_id, tok.token_id("<|im_end|>"))


@pytest.mark.parametrize("template, learned, stop", [
    (LLAMA2, "4, I think. </s> 6.\n\nDone </s>", ("</s>",)),   # decode strips the first " "
    (LLAMA3, "4, I think.<|eot_id|>6.\n\nDone<|eot_id|>", ("</s>", "<|eot_id|>")),
])
def test_prefix_mask_covers_assistant_turns_and_their_end(template, learned, stop, tmp_path):
    tok = load_tokenizer(llama_style(tmp_path / "t", template))
    chat = chat_template_for(tok)
    ids, w = chat.encode(CONV)
    assert tok.decode(ids[w == 1]) == learned
    assert chat.stop_ids == tuple(tok.token_id(s) for s in stop)


def test_template_errors_are_one_line_value_errors(folders, tmp_path):
    chat = chat_template_for(load_tokenizer(folders["llama"]))
    with pytest.raises(ValueError, match=r"refused the conversation: Conversation roles must alternate") as e:
        chat.encode([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match=r"does not compile \(line 1"):
        HFChatTemplate(load_tokenizer(folders["gpt2"]), "{% for m in messages %}")
    # named templates in tokenizer_config.json: "default" is used; chat_template.jinja wins over the config
    folder = shutil.copytree(folders["gpt2"], tmp_path / "named")
    (folder / "chat_template.jinja").unlink()
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = [{"name": "tool_use", "template": "x"}, {"name": "default", "template": LLAMA2}]
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    assert load_tokenizer(folder).chat_template == LLAMA2
    (folder / "chat_template.jinja").write_text(CHATML)
    assert load_tokenizer(folder).chat_template == CHATML
    # no template and no lmforge specials: chat_template_for says so
    (folder / "chat_template.jinja").unlink()
    del config["chat_template"]
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"has no chat template .* and not lmforge's chat specials"):
        chat_template_for(load_tokenizer(folder))


def test_exported_lmforge_tokenizer_comes_back_with_the_same_chat_ids(sp_tok, sp_dir, tmp_path):
    from lmforge.weights.hf_tokenizer import save_hf_tokenizer

    save_hf_tokenizer(tmp_path, sp_tok, sp_dir)
    tok = load_tokenizer(tmp_path)
    assert isinstance(tok, HFTokenizer) and (tok.bos_id, tok.eos_id, tok.pad_id) == (2, 3, 0)
    for text in TEXTS:
        assert tok.encode(text) == sp_tok.encode(text), text
    chat = chat_template_for(tok)   # no jinja template in the export: lmforge's chat format, same ids
    assert isinstance(chat, ChatFormat)
    conv = [{**m, "content": m["content"].replace("🙂", ":)")} for m in CONV]
    for a, b in zip(chat.encode(conv), ChatFormat(sp_tok).encode(conv)):
        assert np.array_equal(a, b)


def test_imported_tokenizer_exports_back_as_it_came(folders, tmp_path):
    from lmforge.weights.hf_tokenizer import save_hf_tokenizer

    tok = load_tokenizer(folders["llama"])
    assert save_hf_tokenizer(tmp_path, tok, folders["llama"]) == {"bos_token_id": 1, "eos_token_id": 2,
                                                                  "pad_token_id": None}
    hf = _hf(tmp_path)
    assert hf.chat_template == LLAMA2 and hf.apply_chat_template(CONV, return_dict=False) == \
        chat_template_for(tok).encode(CONV)[0].tolist()


def test_the_source_generation_config_travels_with_the_tokenizer_to_an_export(folders, tmp_path):
    """A hub model's stop ids and sampling defaults (generation_config.json) were dropped on the way from an
    import to an export: transformers then stopped at eos alone and sampled greedily."""
    import jax
    from flax import nnx

    from lmforge.model import DEFAULT_RULES, ModelConfig, build_model, create_sharded
    from lmforge.train.mesh import MeshConfig, make_mesh
    from lmforge.weights.hf import save_hf

    source = tmp_path / "hub"
    shutil.copytree(folders["llama"], source)
    (source / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": 1, "eos_token_id": [2, 7], "temperature": 0.7, "top_p": 0.8, "do_sample": True,
         "transformers_version": "4.43.0"}))
    tok = load_tokenizer(source)
    tok.save(tmp_path / "run" / "tokenizer")   # what init_from and `lmforge convert` keep in the run
    assert json.loads((tmp_path / "run" / "tokenizer" / "generation_config.json").read_text())["top_p"] == 0.8
    cfg = ModelConfig.llama_tiny(vocab_size=tok.vocab_size + 3)
    mesh = make_mesh(MeshConfig(data=1), devices=jax.devices()[:1])
    _, params, _ = create_sharded(lambda: build_model(cfg, rngs=nnx.Rngs(0)), mesh, DEFAULT_RULES)
    save_hf(tmp_path / "out", cfg, jax.device_get(params), tokenizer_dir=tmp_path / "run" / "tokenizer")
    generation = json.loads((tmp_path / "out" / "generation_config.json").read_text())
    assert generation["eos_token_id"] == [2, 7] and (generation["temperature"], generation["do_sample"]) == (0.7, True)
    assert generation["suppress_tokens"] == list(range(tok.vocab_size, cfg.vocab_size))   # the padded rows
    assert "transformers_version" not in generation
    assert json.loads((tmp_path / "out" / "config.json").read_text())["bos_token_id"] == 1
    loaded = transformers.GenerationConfig.from_pretrained(tmp_path / "out")
    assert loaded.eos_token_id == [2, 7] and loaded.top_p == 0.8


def test_init_from_a_transformers_folder_copies_its_tokenizer(folders, tmp_path):
    from lmforge.train.pretrain import PretrainConfig, prepare_tokenizer

    cfg = PretrainConfig(init_from=str(folders["llama"]))
    tok = prepare_tokenizer(cfg, tmp_path, [], [])
    assert isinstance(tok, HFTokenizer) and tok.chat_template == LLAMA2
    assert sorted(p.name for p in (tmp_path / "tokenizer").iterdir()) == ["chat_template.jinja", "tokenizer.json",
                                                                          "tokenizer_config.json"]
    assert tok.encode(TEXTS[2]) == _hf(folders["llama"])(TEXTS[2], add_special_tokens=False).input_ids
    with pytest.raises(ValueError, match=r"init_from=.*: no tokenizer in .*tokenizer or"):
        prepare_tokenizer(PretrainConfig(init_from=str(tmp_path / "nothing")), tmp_path / "w2", [], [])


@pytest.mark.slow   # 69 s on the 2-core CPU with other suites running beside it (2026-11-30), mostly compiling
def test_run_starts_from_a_transformers_folder(folders, tmp_path):
    """init_from a transformers GPT-2: its tokenizer files are copied into WORKDIR/tokenizer and the run
    trains, evaluates and samples with them."""
    torch = pytest.importorskip("torch")
    from lmforge.data import DataConfig, SourceConfig
    from lmforge.model import ModelConfig
    from lmforge.train.mesh import MeshConfig
    from lmforge.train.optim import OptimConfig
    from lmforge.train.pretrain import PretrainConfig, run_pretrain

    hf_dir = shutil.copytree(folders["gpt2"], tmp_path / "hf")
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=500, n_embd=32, n_layer=2, n_head=2,
                                                         n_positions=64)).save_pretrained(hf_dir)
    text = tmp_path / "text.txt"
    text.write_text("\n\n".join(CORPUS[0][i:i + 300] for i in range(0, 30_000, 300)))
    cfg = PretrainConfig(model=ModelConfig.gpt2(num_layers=2, num_heads=2, embed_dim=32, mlp_dim=64, max_seq_len=32,
                                                vocab_size=0),
                         data=DataConfig(source=SourceConfig(kind="text", path=str(text)), val_fraction=0.1, seq_len=32,
                                         batch_size=8, packing="pack"),
                         optim=OptimConfig(lr=1e-3, warmup_steps=1, decay_steps=4), mesh=MeshConfig(data=-1), steps=2,
                         log_every=1, eval_batch_size=8, eval_max_batches=1, init_from=str(hf_dir),
                         sample_prompts=("def",), sample=dataclasses.replace(PretrainConfig().sample, max_new_tokens=4))
    out = run_pretrain(cfg, tmp_path / "run")
    assert np.isfinite(out["final/val_loss"]) and out["final/step"] == 2
    copied = load_tokenizer(tmp_path / "run" / "tokenizer")
    assert isinstance(copied, HFTokenizer) and copied.chat_template == CHATML_GEN
    assert copied.encode(TEXTS[2]) == load_tokenizer(hf_dir).encode(TEXTS[2])
    assert (tmp_path / "run" / "samples.txt").read_text().count("--- sample") == 1
