"""Bindings on a frozen dataclass tree: every field type, nested keys, errors, sweep grids."""

import dataclasses

import pytest
from cli_fake_task import FakeConfig, SourceCfg

from lmforge.cli import ConfigError, apply_bindings, config_keys, diff, flatten, non_default, parse_sweep
from lmforge.cli.bindings import axis_bindings, format_value, split_sweep

BASE = FakeConfig()


def bind(*bindings):
    return apply_bindings(BASE, bindings)


def error(*bindings) -> str:
    with pytest.raises(ConfigError) as info:
        bind(*bindings)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_each_field_type():
    c = bind("model.num_layers=4", "optim.lr=3e-4", "model.family=llama", "model.use_bias=false",
             "model.dims=(2, 3)", "steps=1e3", "optim.weight_decay=1", "optim.schedule=constant",
             "name='my run'", "model.dropout=0.25")
    assert c.model.num_layers == 4 and c.optim.lr == 3e-4 and c.model.family == "llama"
    assert c.model.use_bias is False and c.model.dims == (2, 3)
    assert c.steps == 1000 and isinstance(c.steps, int)                      # integral float → int
    assert c.optim.weight_decay == 1.0 and isinstance(c.optim.weight_decay, float)  # int → float
    assert c.optim.schedule == "constant" and c.name == "my run" and c.model.dropout == 0.25
    assert BASE == FakeConfig()  # the original is untouched


def test_bool_spellings():
    assert bind("fail=True").fail is True and bind("fail=true").fail is True
    assert bind("fail=False").fail is False
    assert "expects bool, got '1'" in error("fail=1")


def test_nested_keys_and_nested_tuples():
    c = bind("data.source.path=foo.txt", "mesh.rules=(('embed','fsdp'), ('mlp', None))")
    assert c.data.source == SourceCfg(path="foo.txt")
    assert c.mesh.rules == (("embed", "fsdp"), ("mlp", None))
    c = bind("mesh.rules=(('embed', ('data', 'fsdp')),)")
    assert c.mesh.rules == (("embed", ("data", "fsdp")),)
    assert bind("mesh.rules=[['embed', 'fsdp']]").mesh.rules == (("embed", "fsdp"),)  # lists → tuples


def test_bare_words_inside_tuples_are_strings():
    """As `model.family=llama` needs no quotes, neither do plain words in a tuple; mixed, nested, None kept."""
    assert bind("mesh.rules=((embed,fsdp), (mlp, None))").mesh.rules == (("embed", "fsdp"), ("mlp", None))
    assert bind("mesh.rules=[[embed, data/fsdp]]").mesh.rules == (("embed", "data/fsdp"),)
    assert bind("mesh.rules=(('embed', 'fsdp'), (mlp, None))").mesh.rules == (("embed", "fsdp"), ("mlp", None))
    assert "quote strings inside a tuple that are not plain words" in error("mesh.rules=((.*embed, fsdp),)")
    assert "a one-element tuple needs a trailing comma" in error("model.dims=(8)")   # numbers stay numbers
    assert "expects tuple[int, ...]" in error("model.dims=(eight,)")
    # quoted text is taken as written, and a plain string field is not a tuple
    assert bind("mesh.rules=(('embed, (x, y)', mlp),)").mesh.rules == (("embed, (x, y)", "mlp"),)
    assert bind("name=(answer)").name == "(answer)"


def test_a_one_element_tuple_without_its_comma_gets_the_comma_as_its_hint():
    """`(hello)` is a parenthesised word, not a tuple: the hint adds the missing comma to what was written
    (it used to say to quote strings, though hello is a plain word that needs none)."""
    from lmforge.train.pretrain import PretrainConfig

    def real_error(binding):
        with pytest.raises(ConfigError) as info:
            apply_bindings(PretrainConfig(), [binding])
        return str(info.value)

    assert real_error("sample_prompts=(hello)") == ("config key 'sample_prompts' expects tuple[str, ...], got "
                                                    "'(hello)' — a one-element tuple needs a trailing comma: (hello,)")
    assert real_error("sample_prompts=hello").endswith(
        " — a tuple goes in parentheses, one element with a trailing comma: (hello,)")
    assert apply_bindings(PretrainConfig(), ["sample_prompts=(hello,)"]).sample_prompts == ("hello",)
    assert error("mesh.rules=((embed, fsdp))").endswith(" — a one-element tuple needs a trailing comma: ((embed, fsdp),)")
    assert error("mesh.rules=(('embed', 'fsdp'))").endswith(": (('embed', 'fsdp'),)")
    assert error("model.dims=(8)").endswith(" — a one-element tuple needs a trailing comma: (8,)")
    # no comma would make these valid: no comma is suggested
    assert "quote strings inside a tuple" in real_error("sample_prompts=(.*x)")
    assert "trailing comma" not in error("model.dims=(eight)")


def test_optional_none():
    assert bind("optim.clip=None").optim.clip is None
    assert bind("optim.clip=2").optim.clip == 2.0
    assert bind("name=None").name is None
    assert "expects int, got 'None'" in error("steps=None")
    assert bind("data.extra=None").data.extra is None


def test_unknown_key_suggestions():
    assert error("optim.learning_rate=1") == "unknown config key 'optim.learning_rate' — did you mean 'optim.lr'?"
    assert error("lr=1") == "unknown config key 'lr' — did you mean 'optim.lr'?"
    assert error("model.num_layer=1") == "unknown config key 'model.num_layer' — did you mean 'model.num_layers'?"
    assert error("optim.wd=0") == "unknown config key 'optim.wd' — did you mean 'optim.weight_decay'?"
    message = error("model.zzz=1")
    assert message.startswith("unknown config key 'model.zzz'; model has: family, num_layers")
    # an abbreviation of a field (attn for attention) beats a whole-key look-alike in another section
    from lmforge.cli.errors import did_you_mean
    keys = ["model.attention_scale", "model.attention", "model.lora.targets", "model.num_heads"]
    assert did_you_mean("model.attn", keys) == "model.attention"
    assert did_you_mean("model.xyz", keys) is None


def test_wrong_type_messages():
    assert error("model.num_layers=4.5") == "config key 'model.num_layers' expects int, got '4.5'"
    assert error("optim.lr=fast") == "config key 'optim.lr' expects float, got 'fast'"
    assert "expects one of 'cosine', 'constant'" in error("optim.schedule=linear")
    assert "a one-element tuple needs a trailing comma" in error("model.dims=(8)")
    assert "a [...] list is a sweep axis" in error("optim.lr=[1e-3,3e-4]")
    assert "set its fields instead, e.g. 'model.family=…'" in error("model=3")
    assert "expects int, got 'True'" in error("steps=True")  # bool is not an int here


def test_floats_must_be_finite():
    # Issue 13: optim.lr=nan passed every `lr <= 0` check and died in the NaN guard after compiling.
    for text in ("nan", "inf", "-inf", "1e999", "NaN", "-Infinity"):
        assert error(f"optim.lr={text}") == f"config key 'optim.lr' must be a finite number, got {float(text)!r}"
    assert error("optim.clip=nan") == "config key 'optim.clip' must be a finite number, got nan"   # float | None
    assert bind("optim.lr=1e300").optim.lr == 1e300


def test_nanogpt_names_point_to_the_keys_here():
    from lmforge.cli.errors import nanogpt_key
    assert error("dropout=0.1") == "unknown config key 'dropout' — nanoGPT's dropout is 'model.dropout' here"
    assert error("learning_rate=1") == ("unknown config key 'learning_rate' — "
                                        "nanoGPT's learning_rate is 'optim.lr' here")
    # a dotted key was written with lmforge's sections in mind: the nearest key still wins
    assert error("optim.learning_rate=1") == "unknown config key 'optim.learning_rate' — did you mean 'optim.lr'?"
    keys = ["steps", "data.seq_len", "model.max_seq_len", "model.num_layers", "data.batch_size", "optim.b2",
            "optim.warmup_steps", "optim.decay_steps", "optim.min_lr", "eval_every", "model.num_heads",
            "model.embed_dim", "optim.weight_decay"]
    assert nanogpt_key("max_iters", keys) == "nanoGPT's max_iters is 'steps' here"
    assert nanogpt_key("block_size", keys) == "nanoGPT's block_size is 'data.seq_len' and 'model.max_seq_len' here"
    assert nanogpt_key("batch_size", keys) == ("nanoGPT's batch_size is 'data.batch_size' here "
                                               "(the global batch, all processes together)")
    for name, key in [("n_layer", "model.num_layers"), ("n_head", "model.num_heads"), ("n_embd", "model.embed_dim"),
                      ("eval_interval", "eval_every"), ("weight_decay", "optim.weight_decay"), ("beta2", "optim.b2"),
                      ("warmup_iters", "optim.warmup_steps"), ("lr_decay_iters", "optim.decay_steps"),
                      ("min_lr", "optim.min_lr")]:
        assert nanogpt_key(name, keys) == f"nanoGPT's {name} is {key!r} here"
    assert nanogpt_key("max_iters", ["num_steps"]) is None   # only keys the config has


def test_structural_errors():
    assert "is not KEY=VALUE" in error("model.num_layers")
    assert "is None in this config" in error("data.extra.path=x")
    assert "holds a int value, not a config section" in error("steps.x=1")
    assert "set both 'model' and 'model.num_layers'" in error("model=None", "model.num_layers=3")


def test_post_init_sees_all_bindings_of_a_node_at_once():
    c = bind("model.num_heads=3", "model.embed_dim=9")  # 8 % 3 != 0 on the half-applied state
    assert (c.model.num_heads, c.model.embed_dim) == (3, 9)
    message = error("model.num_heads=3")
    assert message.startswith("binding model.num_heads makes an invalid ModelCfg (model): model.embed_dim=8")


def test_later_binding_wins_and_says_so(capsys):
    """As in gin, the later value counts (a script's defaults, then an override), and a note names both:
    it used to win silently, so a typo in a long command line went unnoticed."""
    assert bind("steps=3", "steps=4").steps == 4
    assert capsys.readouterr().err.strip() == "lmforge: config key 'steps' bound twice (3, then 4): 4 counts"
    assert bind("steps=4").steps == 4 and capsys.readouterr().err == ""


def test_flatten_keys_diff_non_default():
    flat = flatten(BASE)
    assert flat["data.source.path"] == "data.txt" and flat["data.extra"] is None
    assert "data.source" not in flat and "data.source" in config_keys(BASE)
    other = bind("optim.lr=0.5", "data.source.kind=jsonl")
    assert diff(BASE, other) == {"optim.lr": (1e-3, 0.5), "data.source.kind": ("text", "jsonl")}
    assert non_default(other) == {"optim.lr": 0.5, "data.source.kind": "jsonl"}
    assert non_default(BASE) == {}


def test_parse_sweep_grid():
    grid = parse_sweep(["optim.lr=[1e-3,3e-4]", "model.num_layers=[2, 4, 6]", "steps=7"])
    assert len(grid) == 6
    assert grid[0] == ["steps=7", "optim.lr=1e-3", "model.num_layers=2"]
    assert grid[-1] == ["steps=7", "optim.lr=3e-4", "model.num_layers=6"]
    for point in grid:
        apply_bindings(BASE, point)  # every point is a valid set of plain bindings


def test_sweep_items_keep_tuples_and_strings():
    fixed, axes = split_sweep(["mesh.rules=[(('embed','fsdp'),), (('embed', None),)]", "model.family=[gpt2, llama]"])
    assert fixed == []
    assert axes == [("mesh.rules", ["(('embed','fsdp'),)", "(('embed', None),)"]),
                    ("model.family", ["gpt2", "llama"])]
    assert apply_bindings(BASE, ["model.dims=(1, 2)"]).model.dims == (1, 2)  # a tuple is not an axis
    with pytest.raises(ConfigError, match="empty list"):
        split_sweep(["optim.lr=[]"])
    with pytest.raises(ConfigError, match="twice"):
        split_sweep(["optim.lr=[1, 2]", "optim.lr=3"])


def test_axis_bindings_from_a_sweep_dict_round_trip():
    bindings = axis_bindings({"optim.lr": [1e-3, 3e-4], "model.family": ["gpt2", "a b", "4"],
                              "model.dims": [(1, 2), (3,)], "optim.clip": [None, 1.0]})
    values = {k: [apply_bindings(BASE, [f"{k}={v}"]) for v in items] for k, items in split_sweep(bindings)[1]}
    assert [c.optim.lr for c in values["optim.lr"]] == [1e-3, 3e-4]
    assert [c.model.family for c in values["model.family"]] == ["gpt2", "a b", "4"]
    assert [c.model.dims for c in values["model.dims"]] == [(1, 2), (3,)]
    assert [c.optim.clip for c in values["optim.clip"]] == [None, 1.0]
    assert format_value("gpt2") == "gpt2" and format_value("None") == "'None'"
    with pytest.raises(ConfigError, match="bind its fields instead"):
        format_value(SourceCfg(), "data.source")


def test_not_a_dataclass():
    with pytest.raises(TypeError):
        apply_bindings({"a": 1}, ["a=2"])
    assert dataclasses.is_dataclass(bind())


def test_items_of_a_named_tuple_are_bound_by_name():
    """``data.mixture.web.weight=0.5``: a tuple of named configs is addressed by item name (sweepable)."""
    from lmforge.data import DataConfig, MixtureSource, SourceConfig

    cfg = DataConfig(mixture=(MixtureSource("web", SourceConfig(kind="text", path="a.txt")),
                              MixtureSource("code", SourceConfig(kind="text", path="b.txt"), 2.0)))
    out = apply_bindings(cfg, ["mixture.web.weight=0.5", "mixture.code.source.path=c.txt"])
    assert [(s.name, s.source.path, s.weight) for s in out.mixture] == [("web", "a.txt", 0.5), ("code", "c.txt", 2.0)]
    assert "mixture.code.source.kind" in config_keys(cfg)
    assert non_default(out)["mixture.web.weight"] == 0.5 and "mixture.web.name" not in non_default(out)
    for binding, message in (
            ("mixture.wbe.weight=1", "mixture has no item named 'wbe'; its items are web, code"),
            ("mixture.web=1", "is a whole item of mixture; bind its fields"),
            ("mixture.web.wieght=1", "did you mean 'mixture.web.weight'"),
            ("mixture.web.source.knd=text", "did you mean 'mixture.web.source.kind'"),   # not code's
            ("mixture.web.weight=0", "weight=0.0; expected a finite number > 0"),
            ("mixture.code.name=web", "names web more than once")):
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            apply_bindings(cfg, [binding])
    with pytest.raises(ConfigError, match="'mixture' is empty in this config.*they do not add items"):
        apply_bindings(DataConfig(), ["mixture.web.weight=2"])


def test_binding_a_family_over_another_familys_model_says_what_it_keeps(capsys):
    """``model.family=llama`` over a GPT-2 experiment keeps LayerNorm, learned positions, GELU and biases:
    a note names them and the bindings that make a Llama; a family bound with its own fields is quiet."""
    from lmforge.model import ModelConfig

    @dataclasses.dataclass(frozen=True)
    class Exp:
        model: ModelConfig = ModelConfig.gpt2_tiny()

    out = apply_bindings(Exp(), ["model.family=llama"])
    assert out.model.family == "llama" and out.model.norm == "layernorm"   # bound as asked, not rewritten
    assert capsys.readouterr().err.strip() == (
        "lmforge: model.family=llama keeps norm='layernorm', position='learned', use_bias=True, activation='gelu' "
        "from the experiment; a llama model has model.norm=rmsnorm model.position=rope model.use_bias=False "
        "model.activation=swiglu (bind those too, or start from an experiment of that family)")
    fixed = apply_bindings(Exp(), ["model.family=llama", "model.norm=rmsnorm", "model.position=rope",
                                   "model.use_bias=False", "model.activation=swiglu"])
    assert fixed.model.family_differences() == {} and capsys.readouterr().err == ""
    apply_bindings(Exp(), ["model.num_layers=3"])
    assert capsys.readouterr().err == ""
