"""Generation tasks (GSM8K, local exact / numeric / regex files), refusal and memorisation: scoring
logic on a stub sampler with canned outputs, then the real sampler on the tiny model."""

import dataclasses

import pytest

from lmforge.eval import (
    GenerationItem,
    GSM8KItem,
    complete,
    generation,
    gsm8k,
    matched_tokens,
    memorisation,
    probes,
    refusal,
)
from lmforge.data.tokenizer import CharTokenizer
from lmforge.eval.jsonl import TaskFileError
from lmforge.infer import Completion, SamplingConfig


@dataclasses.dataclass
class Canned:
    """A sampler stand-in: ``complete`` (and ``completions``) answers each prompt from a dict and records the calls."""
    answers: dict
    calls: list = dataclasses.field(default_factory=list)
    tok: object = None

    def __post_init__(self):
        self.tok = CharTokenizer("".join(sorted(set("".join(self.answers)))))

    def complete(self, prompts, cfg):
        self.calls.append((list(prompts), cfg))
        return [self.answers[p] for p in prompts]

    def completions(self, prompts, cfg, labels=None):
        return [Completion(i, [], [], "stop", text) for i, text in enumerate(self.complete(prompts, cfg))]


def test_gsm8k_scores_strict_and_flexible_extraction():
    items = [GSM8KItem("Q1", "...\n#### 18", "18", "f:1"), GSM8KItem("Q2", "...\n#### 1000", "1000", "f:2"),
             GSM8KItem("Q3", "...\n#### 7", "7", "f:3")]
    stub = Canned({"Question: Q1\nAnswer:": " 16 - 7 = 9, 9 * 2 = 18\n#### 18",
                   "Question: Q2\nAnswer:": " so he pays $1,000.",            # flexible only
                   "Question: Q3\nAnswer:": " #### 8"})                         # wrong
    result = gsm8k(stub, items, batch=2)
    assert result["metrics"] == {"exact_match_strict": 1 / 3, "exact_match_flexible": 2 / 3, "n": 3}
    assert [s["flexible"] for s in result["samples"]] == ["18", "1000", "8"]
    assert [len(p) for p, _ in stub.calls] == [2, 1]                              # batches of 2
    cfg = stub.calls[0][1]
    assert cfg.temperature == 0.0 and cfg.stop_strings == ("Question:",) and cfg.max_new_tokens == 256


def test_generation_task_matches_and_groups_stop_strings():
    items = [GenerationItem("2+2=", ("4",), "g:1"), GenerationItem("Capital of Italy?", ("Rome", "Roma"), "g:2",
                                                                    stop=(".",))]
    stub = Canned({"2+2=": "4", "Capital of Italy?": "Roma"})
    assert generation(stub, items)["metrics"] == {"accuracy": 1.0, "n": 2}
    assert {cfg.stop_strings for _, cfg in stub.calls} == {(".",), ("\n",)}   # one call per set of stops
    stub = Canned({"2+2=": "The sum is 4", "Capital of Italy?": "It is Rome, of course"})
    assert generation(stub, items, match="numeric")["metrics"]["accuracy"] == 0.5
    assert generation(stub, items, match="regex", pattern=r"is (\w+)")["metrics"]["accuracy"] == 1.0
    assert generation(stub, items, match="regex", pattern=r"^(\w+)")["metrics"]["accuracy"] == 0.0
    assert generation(stub, items, match="exact")["metrics"]["accuracy"] == 0.0


def test_refusal_task_on_canned_answers():
    stub = Canned({"Human: a\n\nAssistant:": " I'm sorry, I can't help with that.",
                   "Human: b\n\nAssistant:": " Sure, here is how."})
    result = refusal(stub, ["a", "b"])
    assert result["metrics"] == {"refusal_rate": 0.5, "refusals": 1, "n": 2}
    assert stub.calls[0][1].stop_strings == ("\n\nHuman:", "Human:")


def test_a_prompt_the_tokenizer_cannot_encode_is_named():
    stub = Canned({"abc": "x"})
    with pytest.raises(TaskFileError, match=r"g:1: the model's tokenizer cannot encode this prompt \(character 'Q'"):
        generation(stub, [GenerationItem("abc", ("x",), "g:0"), GenerationItem("Q?", ("x",), "g:1")])
    with pytest.raises(TaskFileError, match=r"HH-RLHF prompt 0 \('zzz'\)"):
        refusal(stub, ["zzz"])


def test_probes_and_matched_tokens(tiny):
    tok = tiny.sampler.tok
    docs = ["short", "a" * 10 + " then a longer document about nothing much at all " * 4, "x y z " * 40]
    found = probes(tok, docs, n=5, prefix=8, suffix=8, seed=0)
    assert len(found) == 5 and {d for d, *_ in found} == {1, 2}                 # the short one holds no probe
    for d, o, pre, suf in found:
        ids = tok.encode(docs[d])
        assert pre == ids[o:o + 8] and suf == ids[o + 8:o + 16]
    assert probes(tok, docs, n=5, prefix=8, suffix=8, seed=0) == found          # deterministic
    with pytest.raises(ValueError, match="no training document holds prefix \\+ suffix = 2000 tokens"):
        probes(tok, docs, n=1, prefix=1000, suffix=1000)
    assert matched_tokens([1, 2, 3, 9], [1, 2, 3, 4]) == 3 and matched_tokens([5], [1]) == 0


def test_memorisation_finds_what_greedy_decoding_reproduces(tiny):
    """A document made of a prefix and the model's own greedy continuation is memorised by definition;
    the same prefix followed by other tokens is not. (Token-id documents: a random model's greedy
    tokens need not be the tokenizer's own encoding of their text.)"""
    sampler, tok = tiny.sampler, tiny.sampler.tok
    prefix = tok.encode("def memorise(x):\n    return x * 2\n")[:8]
    out = sampler.generate_ids([prefix], SamplingConfig(max_new_tokens=12, temperature=0.0))
    greedy = out.tokens[0, :12].tolist()
    result = memorisation(sampler, [prefix + greedy], n=2, prefix=8, suffix=12)
    assert result["metrics"]["memorised_rate"] == 1.0 and result["metrics"]["mean_matched_tokens"] == 12
    other = greedy[:5] + [(t + 1) % 300 for t in greedy[5:]]                     # diverges at token 5
    result = memorisation(sampler, [prefix + other], n=1, prefix=8, suffix=12)
    assert result["metrics"]["memorised_rate"] == 0.0 and result["metrics"]["mean_matched_tokens"] == 5


def test_complete_and_gsm8k_on_the_real_sampler(tiny):
    # Same batch, prompt width, length and stop strings throughout: the sampler compiles once.
    prompts = [f"Question: what is {i} + {i}?\nAnswer:" for i in range(5)]
    texts = complete(tiny.sampler, prompts, max_new_tokens=6, stop=("Question:",), batch=8)
    assert len(texts) == 5 and all(isinstance(t, str) and "Question:" not in t for t in texts)
    assert texts == tiny.sampler.complete(prompts, SamplingConfig(max_new_tokens=6, temperature=0.0,
                                                                  stop_strings=("Question:",)))
    items = [GSM8KItem(f"what is {i} + {i}?", f"{i}+{i}\n#### {2 * i}", str(2 * i), f"f:{i}") for i in range(5)]
    result = gsm8k(tiny.sampler, items, max_new_tokens=6, batch=8)
    assert [s["output"] for s in result["samples"]] == texts
    assert result["metrics"]["n"] == 5 and 0.0 <= result["metrics"]["exact_match_flexible"] <= 1.0


def test_reference_tools_name_the_tools_a_conversation_is_answered_through():
    """What a chat evaluation, GRPO and PPO ask before grading an item without the tool-call loop."""
    from lmforge.data import synthetic
    from lmforge.data.chat import format_call
    from lmforge.eval.chat import reference_tools, task_tools

    assert {t: task_tools(t) for t in synthetic.VERIFIABLE if task_tools(t)} == {"calculator": ("calculator",)}
    messages = [{"role": "user", "content": "q"},
                {"role": "assistant",
                 "content": format_call("python", code="1") + format_call("calculator", expression="2")},
                {"role": "tool", "content": "1"}, {"role": "tool", "content": "2"},
                {"role": "assistant", "content": 'again <tool_call>{"name": "python", "arguments": {}}</tool_call>'},
                {"role": "tool", "content": "1"}, {"role": "assistant", "content": "#### 3"}]
    assert reference_tools(messages) == ("python", "calculator")   # each once, in order of first call
    assert reference_tools([{"role": "user", "content": "<|tool_call|>{...}"},   # a user's text, a malformed call
                            {"role": "assistant", "content": "<|tool_call|>not json"}]) == ()
