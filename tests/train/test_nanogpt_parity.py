"""lmforge's GPT (nanoGPT settings) == nanoGPT's model in PyTorch on the same weights.

The PyTorch side is ``benchmarks/nanogpt_reference.py``'s transcription of nanoGPT's ``model.py``
(the side-by-side reference for ``experiments/shakespeare_char.py``). Needs torch (CPU wheel).
"""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AxisType

from lmforge.model import DecoderLM, ModelConfig, axis_rules, create_sharded
from lmforge.train.mesh import DEFAULT_RULES
from lmforge.model import token_logprobs
from lmforge.train.objectives import causal_lm_loss
from lmforge.model.sharding import use_mesh
from lmforge.train.mesh import MeshConfig as _MeshConfig, make_mesh as _make_mesh

ONE_DEVICE = _make_mesh(_MeshConfig(data=1), devices=jax.devices()[:1])   # models are called under a mesh

torch = pytest.importorskip("torch", reason="needs torch (pip install torch; the CPU wheel is enough)")

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "nanogpt_reference.py"
V, T, D, H, L = 23, 16, 32, 4, 2


def load_reference():
    spec = importlib.util.spec_from_file_location("nanogpt_reference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_same_weights_give_same_logits_and_loss():
    ref = load_reference()
    torch.manual_seed(0)
    cfg = {**ref.COMMON, "n_layer": L, "n_head": H, "n_embd": D, "block_size": T, "dropout": 0.0}
    theirs = ref.build_model(torch, V, cfg).eval()
    with torch.no_grad():   # nanoGPT's LayerNorm weights start at 1: perturb them so the mapping is tested
        for name, p in theirs.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    w = {k: v.detach().numpy() for k, v in theirs.state_dict().items()}

    mcfg = ModelConfig.gpt2(num_layers=L, num_heads=H, embed_dim=D, mlp_dim=4 * D, max_seq_len=T, vocab_size=V,
                            use_bias=False, activation="gelu_exact", dtype="float32")
    mesh = ONE_DEVICE
    ours = nnx.merge(*create_sharded(lambda: DecoderLM(mcfg, rngs=nnx.Rngs(0)), mesh, DEFAULT_RULES)[:2])
    ours.embed[...] = w["transformer.wte.weight"]
    ours.pos_embed[...] = w["transformer.wpe.weight"]
    ours.final_norm.scale[...] = w["transformer.ln_f.weight"]
    hd = D // H
    for i, block in enumerate(ours.blocks):
        p = f"transformer.h.{i}."
        qkv = w[p + "attn.c_attn.weight"].T                              # (D, 3D): torch Linear is (out, in)
        block.attn.q.kernel[...], block.attn.k.kernel[...], block.attn.v.kernel[...] = (
            qkv[:, j * D:(j + 1) * D].reshape(D, H, hd) for j in range(3))
        block.attn.o.kernel[...] = w[p + "attn.c_proj.weight"].T.reshape(H, hd, D)
        block.attn_norm.scale[...] = w[p + "ln_1.weight"]
        block.mlp_norm.scale[...] = w[p + "ln_2.weight"]
        block.mlp.up.kernel[...] = w[p + "mlp.c_fc.weight"].T
        block.mlp.down.kernel[...] = w[p + "mlp.c_proj.weight"].T

    tokens = np.random.default_rng(0).integers(0, V, (3, T + 1))
    x, y = np.ascontiguousarray(tokens[:, :-1]), np.ascontiguousarray(tokens[:, 1:])
    with torch.no_grad():
        logits_ref = theirs.logits(torch.from_numpy(x)).numpy()
        loss_ref = float(theirs(torch.from_numpy(x), torch.from_numpy(y)))
    with use_mesh(mesh):
        logits, _ = ours(jnp.asarray(x))
        hidden, _, _ = ours.hidden_states(jnp.asarray(x))
        loss, _ = causal_lm_loss(token_logprobs(hidden, ours.output_head()[0], jnp.asarray(y)).logprobs,
                                 jnp.ones(y.shape))
    np.testing.assert_allclose(np.asarray(logits), logits_ref, atol=1e-5, rtol=1e-5)
    assert float(loss) == pytest.approx(loss_ref, rel=1e-5)
    assert np.abs(logits_ref).max() > 0.1                                # not a trivial comparison


def test_reference_script_refuses_missing_data(tmp_path):
    ref = load_reference()
    assert ref.main(["--data", str(tmp_path / "missing.txt")]) == 2


@pytest.mark.parametrize("argv, message", [(["--max-iters", "50"], "must exceed the 100 warmup"),
                                           (["--learning-rate", "0"], "--learning-rate must be > 0"),
                                           (["--eval-interval", "0"], "--eval-interval must be >= 1")])
def test_reference_script_refuses_bad_overrides(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_reference().main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
