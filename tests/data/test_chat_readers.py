"""Chat data readers (data/chat_readers.py): OpenAI messages, Alpaca, ShareGPT and HH-RLHF files become
the same conversations, the format is detected per file, gzip and JSON arrays are read, a malformed
record is a one-line error naming file:line, and whatever is skipped is counted."""

import gzip
import json

import pytest
from chat_templates import CHATML_TOOLS

from lmforge.data.chat import ChatFormat, format_call, sft_examples
from lmforge.data.chat_readers import detect_format, parse_hh_transcript, read_chat_records, read_conversations

CONV = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4."}, {"role": "user", "content": "And 3+3?"},
        {"role": "assistant", "content": "6."}]
RECORDS = {
    "messages": {"messages": [{**CONV[0], "role": "developer"}, CONV[1],
                              {"role": "assistant", "content": [{"type": "text", "text": "4"}, {"type": "text", "text": "."}]},
                              CONV[3], CONV[4]]},
    "sharegpt": {"system": "Be brief.", "conversations": [
        {"from": "human", "value": "What is 2+2?"}, {"from": "gpt", "value": "4."},
        {"from": "user", "value": "And 3+3?"}, {"from": "assistant", "value": "6."}]},
    "alpaca": {"system": "Be brief.", "history": [["What is 2+2?", "4."]], "instruction": "And 3+3?", "input": "",
               "output": "6."},
    "hh": {"chosen": "\n\nHuman: What is 2+2?\n\nAssistant: 4.\n\nHuman: And 3+3?\n\nAssistant: 6.",
           "rejected": "\n\nHuman: What is 2+2?\n\nAssistant: 4.\n\nHuman: And 3+3?\n\nAssistant: No."},
}


def _write(path, lines, gz=False):
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("fmt", list(RECORDS))
def test_every_format_gives_the_same_conversation(fmt, tmp_path):
    path = _write(tmp_path / "d.jsonl.gz", [RECORDS[fmt], "", RECORDS[fmt]], gz=True)
    convs, stats = read_conversations(path)
    want = CONV if fmt != "hh" else CONV[1:]   # HH transcripts have no system turn
    assert stats.format == fmt and convs == [want, want]
    assert (stats.records, stats.conversations, stats.skipped["blank lines"]) == (2, 2, 1)
    assert "1 blank lines" in stats.summary()


def test_alpaca_input_rule_and_hh_rejected(tmp_path):
    path = _write(tmp_path / "a.jsonl", [{"instruction": "Sum these.", "input": "2 3", "output": "5"},
                                         {"instruction": "Say hi.", "output": "hi"}])
    convs, _ = read_conversations(path, "alpaca")
    assert convs[0][0] == {"role": "user", "content": "Sum these.\n\n2 3"} and convs[1][0]["content"] == "Say hi."
    path = _write(tmp_path / "h.jsonl", [RECORDS["hh"]])
    assert read_conversations(path, field="rejected")[0][0][-1] == {"role": "assistant", "content": "No."}
    assert parse_hh_transcript("\n\nHuman: a\n\nAssistant:") == [{"role": "user", "content": "a"},
                                                                 {"role": "assistant", "content": ""}]


def test_json_array_files_are_read(tmp_path):
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps([RECORDS["sharegpt"], {"conversations": []}]))
    convs, stats = read_conversations(path)
    assert convs == [CONV] and stats.skipped["empty conversations"] == 1
    path.write_text(json.dumps([RECORDS["sharegpt"], {"conversations": [{"from": "robot", "value": "x"}]}]))
    with pytest.raises(ValueError, match=r"sharegpt.json\[1\]: turn 0 is from 'robot'; expected one of system, human"):
        read_conversations(path)


def test_skips_are_counted(tmp_path):
    only_user = {"messages": [{"role": "user", "content": "hi"}]}
    path = _write(tmp_path / "m.jsonl", [RECORDS["messages"], "  ", {"messages": []}, only_user,
                                         {"messages": [CONV[1], CONV[2], CONV[2]]}])
    convs, stats = read_conversations(path)
    assert len(convs) == 3 and stats.skipped == {"blank lines": 1, "empty conversations": 1}
    assert stats.irregular == {"with two user or assistant turns in a row": 1}
    tool_use = [CONV[1], {"role": "assistant", "content": '<|tool_call|>{"name": "search", "arguments": {}}'},
                {"role": "tool", "content": "no results"}, CONV[2]]   # a call, its result, the answer: regular
    assert read_conversations(_write(tmp_path / "t.jsonl", [{"messages": tool_use}]))[1].irregular == {}
    convs, stats = read_conversations(path, require_assistant=True)
    assert len(convs) == 2 and stats.skipped["conversations without an assistant turn"] == 1
    assert stats.summary().startswith(f"{path} (messages): 2 conversations from 4 records; skipped: 1 blank lines")


@pytest.mark.parametrize("line, fmt, match", [
    ("{not json", "auto", r"m.jsonl:2: not valid JSON .*expected one JSON object per line"),
    ('{"question": "q", "answer": "a"}', None, r"m.jsonl:1: cannot tell the chat format of a record with keys "
                                               r"\['answer', 'question'\]"),
    ('{"conversations": []}', "auto", r"m.jsonl:2: no \"messages\""),   # the format is the first record's
    ('{"messages": [{"role": "robot", "content": "x"}]}', "auto", r"m.jsonl:2: message 0 has role 'robot'"),
    ('{"messages": [{"role": "assistant", "content": null}]}', "auto",
     r"m.jsonl:2: message 0 \(assistant\) has content None; expected a string \(null only beside an assistant's "
     r"tool_calls\)"),
    ('{"messages": [{"role": "assistant", "content": null, "tool_calls": [{}]}]}', "auto",
     r"m.jsonl:2: message 0: tool call 0 is \{\}; expected \{\"type\": \"function\", \"function\": \{\"name\""),
    ('{"messages": [{"role": "assistant", "content": "", "tool_calls": {"function": {"name": "f"}}}]}', "auto",
     r"m.jsonl:2: message 0: tool_calls is \{'function': .*; expected a list of"),
    ('{"messages": [{"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f", '
     '"arguments": "{\\"x\\": 1"}}]}]}', "auto",
     r"m.jsonl:2: message 0, tool call 0: arguments '\{\"x\": 1' are not JSON; expected an object"),
    ('{"messages": [{"role": "user", "content": "hi", "tool_calls": [{"function": {"name": "f"}}]}]}', "auto",
     r"m.jsonl:2: message 0 \(user\) has tool_calls; expected them on an assistant message only"),
    ('[1, 2]', "auto", r"m.jsonl:2: expected a JSON object"),
    ('{"instruction": "x"}', "alpaca", r"m.jsonl:1: no \"output\""),
    ('{"chosen": "Human: hi"}', "hh", r"m.jsonl:1: chosen: the transcript starts with 'Human: hi'"),
])
def test_malformed_records_are_one_line_errors_naming_file_and_line(line, fmt, match, tmp_path):
    lines = [line] if fmt != "auto" else [RECORDS["messages"], line]   # None: auto, the bad record first
    path = _write(tmp_path / "m.jsonl", lines)
    with pytest.raises(ValueError, match=match) as e:
        read_conversations(path, fmt or "auto")
    assert "\n" not in str(e.value)


def test_bad_options_and_files(tmp_path):
    with pytest.raises(ValueError, match=r"format='csv': expected auto or one of messages"):
        read_conversations(tmp_path / "x.jsonl", "csv")
    with pytest.raises(ValueError, match=r"field='best': expected one of chosen, rejected"):
        read_conversations(tmp_path / "x.jsonl", field="best")
    with pytest.raises(FileNotFoundError):
        read_conversations(tmp_path / "missing.jsonl")
    (tmp_path / "latin1.jsonl").write_bytes(b'{"messages": []}\n{"x": "\xe9"}\n')
    with pytest.raises(ValueError, match=r"latin1.jsonl:2: not UTF-8"):
        read_conversations(tmp_path / "latin1.jsonl")
    assert detect_format({"instruction": "a", "output": "b"}) == "alpaca"


def test_real_hh_rlhf_harmless_base_test_split(shared_data):
    path = shared_data / "hh_rlhf_harmless_base_test.jsonl.gz"
    chosen, stats = read_conversations(path)
    assert stats.format == "hh" and len(chosen) == stats.records == 2312 and not any(stats.skipped.values())
    assert stats.irregular == {"with two user or assistant turns in a row": 8, "with an empty turn": 4}
    assert chosen[0][:2] == [{"role": "user", "content": "what are some pranks with a pen i can do?"},
                             {"role": "assistant", "content": "Are you looking for practical joke ideas?"}]
    assert all(c[0]["role"] == "user" and c[-1]["role"] == "assistant" for c in chosen)
    rejected, stats = read_conversations(path, field="rejected")
    assert len(rejected) == 2312 and stats.irregular == {"with two user or assistant turns in a row": 5}
    # a pair shares its prompt: everything up to the last assistant turn (in all but a handful of pairs)
    same_prompt = sum(c[:-1] == r[:-1] for c, r in zip(chosen, rejected))
    assert same_prompt > 0.95 * 2312


def test_trl_prompt_format_and_the_columns_a_record_keeps(tmp_path):
    """TRL's prompt-only and prompt-completion records (strings or messages) are read as the
    conversation they stand for; every record's keys beyond its format's are kept as ``columns``
    (what a reward function or a grader reads), and each conversation keeps its ``file:line``."""
    path = _write(tmp_path / "p.jsonl", [
        {"prompt": "What is 2+2?", "answer": 4, "tests": ["assert f() == 4"]},
        "",
        {"prompt": CONV[:4], "completion": [CONV[4]], "task": "arithmetic"},
        {"prompt": [CONV[1]], "completion": "4."},
    ])
    records, stats = read_chat_records(path)
    assert stats.format == "prompt" and detect_format({"prompt": "x", "solution": "y"}) == "prompt"
    assert [r.where for r in records] == [f"{path}:1", f"{path}:3", f"{path}:4"]
    assert records[0].messages == [CONV[1]] and records[0].columns == {"answer": 4, "tests": ["assert f() == 4"]}
    assert records[1].messages == CONV and records[1].columns == {"task": "arithmetic"}
    assert records[2].messages == CONV[1:3] and records[2].columns == {}
    convs, _ = read_conversations(path)
    assert convs == [r.messages for r in records]
    other = _write(tmp_path / "m.jsonl", [{**RECORDS["messages"], "answer": "6", "id": 7}])
    assert read_chat_records(other)[0][0].columns == {"answer": "6", "id": 7}   # not "messages"
    bad = _write(tmp_path / "bad.jsonl", [{"prompt": "a"}, {"prompt": 3}])
    with pytest.raises(ValueError, match=rf"^{bad}:2: \"prompt\" is 3; expected a string or a list of"):
        read_conversations(bad)
    # A TRL preference file is not read as prompts: its chosen side makes it one (or an error here).
    assert detect_format({"prompt": "x", "chosen": "\n\nHuman: a\n\nAssistant: b"}) == "hh"


# OpenAI's fine-tuning shape of a tool call (glaive, xLAM exports): content "", null or absent beside tool_calls.
WEATHER = {"type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Oslo\"}"}}
ASK, ANSWER = {"role": "user", "content": "Weather in Oslo?"}, {"role": "assistant", "content": "It is 12 C."}


WEATHER_TOOL = {"type": "function", "function": {"name": "weather", "description": "Today's weather in a city",
                                                 "parameters": {"type": "object", "properties": {
                                                     "city": {"type": "string"}}, "required": ["city"]}}}


def _tool_record(call_message):
    return {"messages": [ASK, call_message, {"role": "tool", "tool_call_id": "call_1", "name": "weather",
                                             "content": "Oslo: 12 C"}, ANSWER], "tools": [WEATHER_TOOL]}


def test_openai_tool_calls_are_read_and_their_tokens_trained(sp_tok, tmp_path):
    """An assistant's ``tool_calls`` are kept (arguments as an object), whatever its content holds, and SFT
    on the record trains the call's tokens and never the tool's result."""
    path = _write(tmp_path / "tools.jsonl", [
        _tool_record({"role": "assistant", "content": "", "tool_calls": [{**WEATHER, "id": "call_1"}]}),
        _tool_record({"role": "assistant", "content": None, "tool_calls": [WEATHER]}),
        _tool_record({"role": "assistant", "tool_calls": [{"function": {"name": "weather",
                                                                        "arguments": {"city": "Oslo"}}}]}),
        _tool_record({"role": "assistant", "content": None, "function_call": WEATHER["function"]}),   # legacy
    ])
    records, stats = read_chat_records(path)
    call = {"type": "function", "function": {"name": "weather", "arguments": {"city": "Oslo"}}}
    assert records[0].messages == [ASK, {"role": "assistant", "content": "", "tool_calls": [{**call, "id": "call_1"}]},
                                   {"role": "tool", "content": "Oslo: 12 C", "tool_call_id": "call_1"}, ANSWER]
    assert all(r.messages[1]["tool_calls"] == [call] for r in records[1:])
    assert records[0].columns == {"tools": [WEATHER_TOOL]} and stats.irregular == {}
    assert all(r.tools == [WEATHER_TOOL] for r in records)
    fmt = ChatFormat(sp_tok)
    examples, _ = sft_examples([r.messages for r in records], fmt, seq_len=256)
    as_text = [ASK, {"role": "assistant", "content": format_call("weather", city="Oslo")},
               {"role": "tool", "content": "Oslo: 12 C"}, ANSWER]
    ids, weights = fmt.encode(as_text)
    for e in examples:   # the same ids and mask as the call written in lmforge's format
        assert e["targets"].tolist() == ids[1:].tolist() and e["weights"].tolist() == weights[1:].tolist()
    learned = sp_tok.decode(examples[0]["targets"][examples[0]["weights"] > 0].tolist())
    assert learned == '<|tool_call|>{"name": "weather", "arguments": {"city": "Oslo"}}<|end|>It is 12 C.<|end|>'


def test_a_records_tools_are_read_in_every_written_shape_and_rendered_untrained(sp_tok, tmp_path):
    """A record's ``tools`` column — OpenAI's list, its JSON string (glaive, LLaMA-Factory), bare
    ``{"name", ...}`` entries (xLAM) — reads as the schemas chat templates take; SFT renders them where the
    template shows tools (lmforge's format: the system turn), as TRL's SFT does, and trains none of them;
    a malformed one is a one-line error naming ``file:line``."""
    conv = [ASK, ANSWER]
    bare = dict(WEATHER_TOOL["function"])
    path = _write(tmp_path / "t.jsonl", [{"messages": conv, "tools": [WEATHER_TOOL]},
                                         {"messages": conv, "tools": json.dumps([WEATHER_TOOL])},
                                         {"messages": conv, "tools": [bare]},
                                         {"messages": conv, "tools": "[]"}, {"messages": conv}])
    records, _ = read_chat_records(path)
    assert [r.tools for r in records] == [[WEATHER_TOOL]] * 3 + [None, None]
    assert records[2].columns == {"tools": [bare]}   # the column stays as written
    fmt = ChatFormat(sp_tok)
    examples, _ = sft_examples([r.messages for r in records], fmt, seq_len=512, tools=[r.tools for r in records])
    with_tools, weights = fmt.encode(conv, tools=[WEATHER_TOOL])
    assert examples[0]["targets"].tolist() == with_tools[1:].tolist() == examples[2]["targets"].tolist()
    assert examples[0]["weights"].tolist() == weights[1:].tolist()
    assert examples[4]["targets"].tolist() == fmt.encode(conv)[0][1:].tolist() != with_tools[1:].tolist()
    assert "Today's weather in a city" in sp_tok.decode(examples[0]["targets"].tolist())
    assert sp_tok.decode(examples[0]["targets"][examples[0]["weights"] > 0].tolist()) == "It is 12 C.<|end|>"

    for tools, message in [("{", r"t2.jsonl:1: tools '\{' is not JSON; expected a list of"),
                           ({"name": "weather"}, r"t2.jsonl:1: tools is \{'name': 'weather'\}; expected a list"),
                           ([WEATHER_TOOL, {"description": "x"}], r"t2.jsonl:1: tool 1 is \{'description': 'x'\}"),
                           ([{"type": "retrieval", "function": {"name": "w"}}], r"t2.jsonl:1: tool 0 is"),
                           ([{"name": "w", "parameters": "city"}], r"t2.jsonl:1: tool 0 is")]:
        with pytest.raises(ValueError, match=message):
            read_chat_records(_write(tmp_path / "t2.jsonl", [{"messages": conv, "tools": tools}]))


def test_sft_reads_a_files_tools_into_its_items(tmp_path):
    from lmforge.align.sft import read_file

    path = _write(tmp_path / "t.jsonl", [{"messages": [ASK, ANSWER], "tools": json.dumps([WEATHER_TOOL])},
                                         {"messages": [ASK, ANSWER]}])
    assert [it["tools"] for it in read_file(str(path), "auto")] == [[WEATHER_TOOL], None]


def test_sharegpt_function_call_turns_name_what_is_read(tmp_path):
    path = _write(tmp_path / "s.jsonl", [{"conversations": [
        {"from": "human", "value": "weather?"}, {"from": "function_call", "value": "{\"name\": \"weather\"}"}]}])
    with pytest.raises(ValueError, match=r"s.jsonl:1: turn 1 is from 'function_call' \(a tool call: not read in "
                                         r"ShareGPT records; write them as OpenAI \"messages\" with an assistant's "
                                         r"\"tool_calls\", which are read\); expected one of system"):
        read_conversations(path)



def test_tool_calls_read_from_a_file_render_through_an_imported_template(tmp_path):
    """An imported model's template (Qwen 2.5's way with calls, shortened) gets the calls in OpenAI's shape,
    arguments an object as ``apply_chat_template`` wants them: the call is trained on, the result is not."""
    tokenizers = pytest.importorskip("tokenizers")
    from lmforge.data.hf_tokenizer import HFChatTemplate, HFTokenizer

    tk = tokenizers.Tokenizer(tokenizers.models.BPE())
    tk.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=300, special_tokens=["<|im_start|>", "<|im_end|>"],
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
                                             show_progress=False)
    tk.train_from_iterator(["Weather in Oslo? It is 12 C. weather city arguments name"] * 4, trainer)
    tok = HFTokenizer(tk.to_str(), {"eos_token": "<|im_end|>"}, chat_template_file=CHATML_TOOLS)
    records, _ = read_chat_records(_write(tmp_path / "t.jsonl", [_tool_record(
        {"role": "assistant", "content": None, "tool_calls": [WEATHER]})]))
    (example,), _ = sft_examples([records[0].messages], HFChatTemplate(tok), seq_len=256)
    learned = tok.decode(example["targets"][example["weights"] > 0].tolist())
    assert '<tool_call>\n{"name": "weather", "arguments": {"city": "Oslo"}}\n</tool_call><|im_end|>' in learned
    assert "It is 12 C." in learned and "Oslo: 12 C" not in learned
