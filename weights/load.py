"""``load_params``: the one way parameters enter a sampler, a trainer's frozen tree or an export.

    loaded = load_params("runs/quickstart-...", mesh)            # a run folder: its latest checkpoint
    loaded = load_params("runs/quickstart-...", mesh, step=300)  # a given step
    loaded = load_params("hf_llama/", mesh, dtype="bfloat16")    # a Hugging Face folder
    loaded = load_params("model_folder/", mesh)                  # an lmforge model folder
    model = nnx.merge(loaded.graphdef, loaded.params)

Choices:
- Born sharded: the model is traced abstractly (no memory) to get every parameter's
  NamedSharding from its logical axes and the rules, and each parameter is placed straight into
  its shards — from a run folder by orbax restoring onto those shardings, from a safetensors file
  by ``jax.make_array_from_callback`` handing each device its slice. No parameter is ever whole on
  one device, so a model that only fits with FSDP loads, samples and exports.
- A run folder is read for its parameters only: a partial orbax restore (``Checkpointer.restore_params``)
  never reads the optimizer state. A run that trained a subset (LoRA adapters, frozen layers)
  checkpoints only that subset; the rest comes from the base it started from, named in its
  ``base.json`` and loaded the same way, recursively.
- ``dtype`` casts floating-point parameters (e.g. bfloat16 weights for inference); the model's
  ``param_dtype`` follows, so shapes, dtypes and shardings of the result agree with ``graphdef``.
- Every mismatch (a missing or extra parameter, a wrong shape, a checkpoint of another model) is a
  one-line :class:`WeightsError` (or ``CheckpointError``) naming the parameter and both shapes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lmforge.model import DEFAULT_RULES, LoRAConfig, ModelConfig, ModelRuntime, abstract_sharded, build_model
from lmforge.model.config import NATIVE_PLATFORM
from lmforge.model.paths import combine, flatten, unflatten
from lmforge.weights.checkpoint import Checkpointer
from lmforge.weights.folder import (MODEL_FILE, WeightsError, is_model_folder, not_json, read_model_config,
                                   read_model_folder)

BASE_FILE = "base.json"
KINDS = ("run", "hf", "model")
# Top-level keys of a run checkpoint's parameters that train beside the model and are not part of it
# (PPO's value model, ``lmforge.align.ppo``): reading a run's model passes over them.
BESIDE_MODEL = ("critic",)


@dataclasses.dataclass
class LoadedModel:
    """Parameters placed on a mesh, with what is needed to use them."""
    cfg: ModelConfig
    graphdef: Any            # nnx.merge(graphdef, params) is the model
    params: dict             # nested dict of sharded jax.Arrays
    shardings: dict          # the same tree of NamedShardings
    kind: str                # "run" | "hf" | "model"
    source: pathlib.Path
    step: int | None         # the checkpoint step (run folders)


def source_kind(source: pathlib.Path) -> str:
    """"run" (a ``lmforge run`` workdir), "hf" (a transformers folder) or "model" (an lmforge model folder).

    Raises WeightsError (naming what the folder lacks) for anything else.
    """
    source = pathlib.Path(source)
    if not source.is_dir():
        raise WeightsError(f"{source} is not a folder (expected a run folder, a transformers folder or an lmforge "
                           f"model folder)")
    if is_model_folder(source):
        return "model"
    config = source / "config.json"
    if config.is_file():
        try:
            fields = json.loads(config.read_text())
        except json.JSONDecodeError as e:
            raise WeightsError(not_json(config, e, "a JSON object: a run's config or a transformers model's "
                                                  "config")) from None
        if isinstance(fields, dict) and "model_type" in fields:
            return "hf"
    if (source / "checkpoints").is_dir() or (source / "model.json").is_file():
        return "run"
    inner = inner_runs(source)
    raise WeightsError(f"{source} is neither a run folder (checkpoints/ + model.json), a transformers folder "
                       f"(config.json with model_type) nor a model folder (model.json + params.safetensors)"
                       + (f"; it holds {', '.join(inner[:4])}: give one of those" if inner else ""))


def inner_runs(folder: pathlib.Path) -> list[str]:
    """Names of the subfolders of ``folder`` that record a model (``model.json``), sorted: the runs a task
    keeps in stages (interrogation's ``stage1/``, ``stage2/``)."""
    return sorted(d.name for d in pathlib.Path(folder).iterdir() if d.is_dir() and (d / MODEL_FILE).is_file())


def check_init_from(init_from: str, needs: str, key: str = "init_from") -> None:
    """A config's ``init_from`` (or the field ``key``) names a weights source (:func:`source_kind`),
    checked without loading it.

    ``needs`` says why a model is needed ("SFT starts from a pretrained model"), for the empty case.
    Raises WeightsError (a ValueError): one line naming ``key`` and what was expected.
    """
    if not init_from:
        raise WeightsError(f"{key} is empty: {needs} (a run folder, a model folder or a transformers folder), "
                           f"e.g. {key}=runs/quickstart-...")
    try:
        source_kind(pathlib.Path(init_from))
    except WeightsError as e:
        raise WeightsError(f"{key}: {e}") from None


def resumes_alone(run: str | pathlib.Path) -> bool:
    """Whether resuming ``run`` needs nothing from its ``init_from``: it has saved a checkpoint step,
    records its model (``model.json``), and trained every parameter (no ``base.json`` naming where
    frozen ones come from), so its checkpoints hold every weight. A full fine-tune or a continued
    pretraining run resumes so (from :func:`load_params` of the run itself) after its init_from
    folder was moved or cleaned up; a LoRA run does not: its base holds the frozen weights."""
    run = pathlib.Path(run)
    return (run / MODEL_FILE).is_file() and not (run / BASE_FILE).exists() and has_checkpoint(run)


def has_checkpoint(run: str | pathlib.Path) -> bool:
    """Whether the run folder ``run`` holds a finalized checkpoint step (an integer-named folder under
    ``checkpoints/``; orbax renames ``<step>.orbax-checkpoint-tmp-*`` when a save is done). The CLI's
    ``cli.launch.checkpoint_steps`` lists them without importing JAX."""
    ckpts = pathlib.Path(run) / "checkpoints"
    return ckpts.is_dir() and any(p.name.isdigit() and p.is_dir() for p in ckpts.iterdir())


def write_base(workdir: pathlib.Path, source: str | pathlib.Path, digest: str | None = None) -> None:
    """Records in a run folder the weights source its frozen parameters come from (``base.json``):
    ``{"source": absolute path, "digest": tree_digest of those frozen parameters}``. With the digest,
    loading the run reads a base run that trained on at the step that still holds them (said on
    stderr), and refuses a base that holds them nowhere (a folder replaced, the step pruned) instead
    of pairing the run's adapters with weights they were never trained over."""
    record = {"source": str(pathlib.Path(source).absolute()), **({"digest": digest} if digest else {})}
    path = pathlib.Path(workdir) / BASE_FILE
    tmp = path.with_name(f".{BASE_FILE}.tmp")   # atomic: other processes of a resumed run read it meanwhile
    tmp.write_text(json.dumps(record) + "\n")
    os.replace(tmp, path)


def read_base(workdir: pathlib.Path) -> dict | None:
    """A run folder's ``base.json`` ({"source", and "digest" when recorded}), or None without one.
    Raises WeightsError for a file that is not such a record."""
    path = pathlib.Path(workdir) / BASE_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        str(record["source"])
    except (ValueError, KeyError, TypeError) as e:
        raise WeightsError(f"{path}: expected {{\"source\": FOLDER, \"digest\": HEX}} ({type(e).__name__}: {e})") from None
    return record


def check_base_digest(run: pathlib.Path, record: dict, digest: str) -> None:
    """Raises WeightsError when ``record`` (a run's base.json) holds a digest other than ``digest``,
    that of the frozen parameters its base gives now."""
    if record.get("digest") and record["digest"] != digest:
        raise WeightsError(f"{record['source']}, the base of {run} ({BASE_FILE}), no longer holds the weights the run "
                           f"was trained over (digest {record['digest']}, now {digest}): it was trained further (and "
                           f"no step of it left holds them) or replaced; restore them, or train the run again over it")


def load_params(source: str | pathlib.Path, mesh: jax.sharding.Mesh, *, rules=DEFAULT_RULES, dtype: str | None = None,
                step: int | None = None, model_cfg: ModelConfig | None = None, lora: LoRAConfig | None = None,
                seed: int = 0, runtime: ModelRuntime | None = None, num_labels: int = 0) -> LoadedModel:
    """Loads a model's parameters from ``source`` directly into their shards on ``mesh``.

    Args:
      source: a run folder (the latest readable checkpoint, or ``step``), a Hugging Face folder, or
        an lmforge model folder.
      mesh: where the parameters go; their shardings come from the logical axes and ``rules``.
      dtype: cast floating-point parameters to this dtype (None: as stored).
      step: a run folder's checkpoint step (None: the latest readable one).
      model_cfg: the model's config when the source does not say it (a run folder written before
        runs recorded ``model.json``); otherwise it must be None.
      lora: add fresh LoRA adapters (A random from ``seed``, B zero: the model computes exactly the
        source's function) to a source without adapters — the start of a LoRA fine-tune.
      num_labels: give a decoder language model a fresh score head of this many outputs in place of its
        unembedding (normal, std ``init_std``, from ``seed``; transformers' ``*ForSequenceClassification``
        initialisation) — the start of reward-model training. A source whose score head already has
        ``num_labels`` outputs loads as it is; 0 loads the source's head.
      runtime: how the model computes here (attention backend, remat policy); "" fields keep the
        source's. An attention backend the source recorded that this platform does not run natively
        (``NATIVE_PLATFORM``: cuDNN or flash off GPUs, splash off TPUs) becomes ``xla``, said on stderr.

    Returns:
      LoadedModel with graphdef, params and shardings.

    Raises:
      WeightsError / CheckpointError / InteropError: the source is not usable, with the reason.
    """
    loaded = _load(pathlib.Path(source), mesh, rules, dtype, step, model_cfg)
    if num_labels:
        loaded = _with_score_head(loaded, num_labels, mesh, rules, seed)
    if lora is not None and lora.rank:
        loaded = _with_fresh_adapters(loaded, lora, mesh, rules, seed)
    return _with_runtime(loaded, runtime or ModelRuntime(), mesh, rules)


def _load(source: pathlib.Path, mesh, rules, dtype, step, model_cfg) -> LoadedModel:
    kind = source_kind(source)
    if step is not None and kind != "run":
        raise WeightsError(f"step={step} is for run folders; {source} is a {kind} folder")
    if kind == "run":
        return _load_run(source, mesh, rules, dtype, step, model_cfg)
    if kind == "hf":
        from lmforge.weights.hf import load_hf
        cfg, host, _ = load_hf(source)
    else:
        cfg, host = read_model_folder(source)
    cfg = _with_dtype(cfg, dtype)
    graphdef, abstract, shardings = _abstract(cfg, mesh, rules)
    params = place(host, abstract, what=str(source))
    return LoadedModel(cfg, graphdef, params, shardings, kind, source, None)


def _with_runtime(loaded: LoadedModel, runtime: ModelRuntime, mesh, rules) -> LoadedModel:
    changes = runtime.overrides()
    native = NATIVE_PLATFORM.get(loaded.cfg.attention)
    platform = jax.default_backend()
    if "attention" not in changes and native is not None and native != platform:
        changes["attention"] = "xla"
        print(f"lmforge: {loaded.source} computes attention with {loaded.cfg.attention!r}, which runs on "
              f"{native.upper()}s; using 'xla' on {platform} (model.attention chooses)", file=sys.stderr, flush=True)
    changes = {k: v for k, v in changes.items() if getattr(loaded.cfg, k) != v}
    if not changes:
        return loaded
    cfg = dataclasses.replace(loaded.cfg, **changes)
    graphdef, _, _ = _abstract(cfg, mesh, rules)
    return dataclasses.replace(loaded, cfg=cfg, graphdef=graphdef)


def with_fresh_lora(cfg: ModelConfig, lora: LoRAConfig, source) -> ModelConfig:
    """``cfg`` with new LoRA adapters ``lora``; WeightsError when ``source``'s model has some already."""
    if cfg.lora.rank:
        raise WeightsError(f"{source} already has LoRA adapters (rank {cfg.lora.rank}); merge them before adding new "
                           f"ones: `lmforge convert {source} MERGED` writes the model with its adapters merged (a "
                           f"transformers folder), to start from as init_from=MERGED")
    return dataclasses.replace(cfg, lora=lora)


def _with_fresh_adapters(base: LoadedModel, lora: LoRAConfig, mesh, rules, seed: int) -> LoadedModel:
    from lmforge.weights.adapters import init_adapters

    cfg = with_fresh_lora(base.cfg, lora, base.source)
    adapters, adapter_sh = init_adapters(cfg, mesh, rules=rules, seed=seed)
    graphdef, _, _ = _abstract(cfg, mesh, rules)
    return dataclasses.replace(base, cfg=cfg, graphdef=graphdef, params=combine(base.params, adapters),
                               shardings=combine(base.shardings, adapter_sh))


def _with_score_head(base: LoadedModel, num_labels: int, mesh, rules, seed: int) -> LoadedModel:
    """``base`` with a fresh score head ``(D, num_labels)`` and no unembedding (the token table stays: it is
    the input embedding)."""
    if base.cfg.num_labels == num_labels:
        return base
    if base.cfg.num_labels:
        raise WeightsError(f"{base.source} has a score head of {base.cfg.num_labels} output"
                           f"{'s' if base.cfg.num_labels > 1 else ''} already; expected a language model or a score "
                           f"head of num_labels={num_labels}")
    if base.cfg.architecture != "decoder":
        raise WeightsError(f"{base.source} holds a {base.cfg.family} ({base.cfg.architecture}) model; a score head "
                           f"goes on a decoder-only model")
    cfg = dataclasses.replace(base.cfg, num_labels=num_labels)
    graphdef, abstract, shardings = _abstract(cfg, mesh, rules)
    want = abstract["score"]
    host = np.random.default_rng(seed).normal(0.0, cfg.init_std, want.shape).astype(want.dtype)
    params = {k: v for k, v in base.params.items() if k != "unembed"}
    params["score"] = jax.make_array_from_callback(want.shape, want.sharding, lambda index: host[index])
    return dataclasses.replace(base, cfg=cfg, graphdef=graphdef, params=params, shardings=shardings)


def _with_dtype(cfg: ModelConfig, dtype: str | None) -> ModelConfig:
    return cfg if dtype is None else dataclasses.replace(cfg, param_dtype=jnp.dtype(dtype).name)


def _abstract(cfg: ModelConfig, mesh, rules):
    return abstract_sharded(lambda: build_model(cfg, rngs=nnx.Rngs(0)), mesh, rules)


def place(host: dict, abstract: dict, *, what: str) -> dict:
    """Host arrays (nested dict) -> jax arrays on ``abstract``'s shardings and dtypes, one device slice
    at a time (``jax.make_array_from_callback``). Raises WeightsError on a missing, extra or
    wrongly shaped parameter."""
    flat_host, flat_abs = dict(flatten(host)), dict(flatten(abstract))
    missing, extra = sorted(flat_abs.keys() - flat_host.keys()), sorted(flat_host.keys() - flat_abs.keys())
    if missing or extra:
        raise WeightsError(f"{what} does not fit the model: missing {missing[:4] or 'none'}"
                           f"{' ...' if len(missing) > 4 else ''}; not in the model {extra[:4] or 'none'}"
                           f"{' ...' if len(extra) > 4 else ''}")
    out = {}
    for path, want in flat_abs.items():
        x = np.asarray(flat_host[path])
        if x.shape != want.shape:
            raise WeightsError(f"{what}: parameter {path!r} has shape {x.shape}; the model expects {want.shape}")
        x = x.astype(want.dtype, copy=False)
        out[path] = jax.make_array_from_callback(want.shape, want.sharding, lambda index, x=x: x[index])
    return unflatten(out)


def source_model_config(source: str | pathlib.Path) -> ModelConfig:
    """The model a weights source records, read without its parameters: a run or model folder's
    ``model.json``, a transformers folder's ``config.json`` -- before what :func:`load_params` adjusts
    on loading (a T5 checkpoint's untied ``lm_head``, an attention backend this platform lacks).

    Raises WeightsError / InteropError: the source is not usable, with the reason.
    """
    source = pathlib.Path(source)
    kind = source_kind(source)
    if kind == "hf":
        from lmforge.weights.hf import read_hf_config
        from lmforge.weights.hf_config import config_from_hf
        return config_from_hf(read_hf_config(source))
    if kind == "run" and not (source / "model.json").is_file():
        raise WeightsError(f"{source} has no model.json (written by runs since the post-training foundation); "
                           f"`lmforge convert RUN DST` writes a model folder from the run's config.json")
    return read_model_config(source)


def refuse_reward_model(source: str | pathlib.Path, use: str) -> None:
    """Raises WeightsError (one line) when ``source`` holds a reward model (a score head, no language-model
    head), which ``use`` (sampling, chat, SFT, DPO, ...) cannot take. Reads ``model.json`` /
    ``config.json`` only; a source that records no model (a run older than ``model.json``) passes."""
    try:
        cfg = source_model_config(source)
    except WeightsError:
        return
    if cfg.num_labels:
        raise WeightsError(f"{source} is a reward model (a score head of {cfg.num_labels} output"
                           f"{'s' if cfg.num_labels > 1 else ''}, no language-model head); {use} needs a language "
                           f"model")


def _load_run(run: pathlib.Path, mesh, rules, dtype, step, model_cfg) -> LoadedModel:
    if (run / "model.json").is_file():
        if model_cfg is not None:
            raise WeightsError(f"{run} records its model in model.json; do not pass model_cfg")
        cfg = read_model_config(run)
    elif model_cfg is not None:
        cfg = model_cfg
    else:
        raise WeightsError(f"{run} has no model.json (written by runs since the post-training foundation); "
                           f"pass model_cfg, or use `lmforge sample`/`convert`, which rebuild it from config.json")
    _, abstract, _ = _abstract(cfg, mesh, rules)          # as stored: the run's param_dtype
    ckpt = Checkpointer(run / "checkpoints")
    try:
        saved = ckpt.saved_leaves("params", step=step)
        if saved is None:
            raise WeightsError(f"{run / 'checkpoints'} holds no checkpoint (the run has not saved one yet: it "
                               f"saves at checkpoint_every, at its end and on SIGTERM / Ctrl-C)")
        flat_abs = dict(flatten(abstract))
        saved = {p for p in saved if p.split(".", 1)[0] not in BESIDE_MODEL}
        unknown = sorted(saved - flat_abs.keys())
        if unknown:
            from lmforge.weights.checkpoint import CheckpointError
            raise CheckpointError(f"checkpoint in {run / 'checkpoints'} does not fit the model of {run / 'model.json'}: "
                                  f"it holds parameters the model lacks ({', '.join(unknown[:4])})")
        # Restored in the stored dtype (the checkpoint's fingerprints are of those bits), cast after.
        restored = ckpt.restore_params(unflatten({p: a for p, a in flat_abs.items() if p in saved}), step=step)
    finally:
        ckpt.close()
    got_step, params = restored
    rest = sorted(flat_abs.keys() - saved)
    if rest:
        params = combine(params, _from_base(run, cfg, mesh, rules, rest))
    cfg = _with_dtype(cfg, dtype)
    graphdef, abstract, shardings = _abstract(cfg, mesh, rules)
    params = _cast(params, abstract)
    print(f"using step {got_step} of {run}", file=sys.stderr)
    return LoadedModel(cfg, graphdef, params, shardings, "run", run, got_step)


def _from_base(run: pathlib.Path, cfg: ModelConfig, mesh, rules, paths: list[str]) -> dict:
    """The parameters ``paths`` that a run did not train, from the base recorded in its base.json."""
    return _matching_base(run, cfg, mesh, rules, paths)[0]


def resume_base_step(run: pathlib.Path, mesh, rules=DEFAULT_RULES) -> int | None:
    """The step of a run's base run (``base.json``) that holds the frozen parameters the run was trained
    over (by digest), for a runner that resumes ``run`` and loads its base again (``run_sft``): a base
    run that trained on since would otherwise give other weights, and the resume be refused. None
    when ``run`` has no checkpoint, no digest, or a base that is not a run folder.
    Raises WeightsError when the base is gone or holds those weights at no step."""
    run = pathlib.Path(run)
    record = read_base(run)
    if record is None or not record.get("digest") or not (run / MODEL_FILE).is_file():
        return None
    base = pathlib.Path(record["source"])
    if base.exists() and source_kind(base) != "run":
        return None
    cfg = read_model_config(run)
    with Checkpointer(run / "checkpoints") as ckpt:
        saved = ckpt.saved_leaves("params")
    if saved is None:
        return None
    _, abstract, _ = _abstract(cfg, mesh, rules)
    return _matching_base(run, cfg, mesh, rules, sorted(dict(flatten(abstract)).keys() - saved))[1]


def _matching_base(run: pathlib.Path, cfg: ModelConfig, mesh, rules, paths: list[str]) -> tuple[dict, int | None]:
    """(the parameters ``paths`` of the run's base, the base step they come from): the base's newest,
    or, when base.json's digest says the run was trained over other weights, the newest step of a
    base run that holds those (said on stderr). Raises WeightsError when none does."""
    record = read_base(run)
    if record is None:
        raise WeightsError(f"the checkpoint in {run / 'checkpoints'} does not fit the model of {run / 'model.json'}: "
                           f"it lacks {paths[:3]}{' ...' if len(paths) > 3 else ''} (another architecture?), and the "
                           f"run names no base to take them from ({BASE_FILE})")
    base = record["source"]
    if not pathlib.Path(base).exists():
        raise WeightsError(f"{base}, the base of {run} ({BASE_FILE}), does not exist: the run holds only what it "
                           f"trained; put the base back there, or edit {run / BASE_FILE} to where it is now")
    base_cfg = dataclasses.replace(cfg, lora=dataclasses.replace(cfg.lora, rank=0))
    frozen, loaded = _base_params(run, base, base_cfg, paths, mesh, rules, step=None)
    if not record.get("digest"):
        return frozen, loaded.step
    from lmforge.weights.checkpoint import tree_digest
    digest = tree_digest(frozen)
    if digest == record["digest"] or loaded.kind != "run":
        check_base_digest(run, record, digest)
        return frozen, loaded.step
    # A base run that trained on: the step the run was trained over may still be on disk.
    with Checkpointer(pathlib.Path(base) / "checkpoints") as ckpt:
        steps = sorted((s for s in ckpt.all_steps() if s != loaded.step), reverse=True)
    for step in steps:
        older, _ = _base_params(run, base, base_cfg, paths, mesh, rules, step=step)
        if tree_digest(older) == record["digest"]:
            print(f"lmforge: {base}, the base of {run}, has trained on since (step {loaded.step}); using its step "
                  f"{step}, the weights the run was trained over", file=sys.stderr, flush=True)
            return older, step
    check_base_digest(run, record, digest)   # none of its steps (pruned?): refused, naming both digests
    return frozen, loaded.step


def _base_params(run: pathlib.Path, base: str, base_cfg: ModelConfig, paths: list[str], mesh, rules, *,
                 step: int | None) -> tuple[dict, LoadedModel]:
    """The parameters ``paths`` of ``base`` (at ``step`` of a run base), checked against the run's model."""
    try:
        loaded = _load(pathlib.Path(base), mesh, rules, None, step, None)
    except WeightsError as e:
        raise WeightsError(f"the base of {run} ({BASE_FILE}): {e}") from None
    # A reward model is trained over a language model: the heads may differ, the trunk may not.
    if dataclasses.replace(loaded.cfg, lora=base_cfg.lora, num_labels=base_cfg.num_labels) != base_cfg:
        raise WeightsError(f"{run} was trained over {base}, whose model no longer matches {run / 'model.json'}")
    flat = dict(flatten(loaded.params))
    missing = [p for p in paths if p not in flat]
    if missing:
        raise WeightsError(f"{base} (the base of {run}) has no parameter {missing[0]!r}")
    return unflatten({p: flat[p] for p in paths}), loaded


def _cast(params: dict, abstract: dict) -> dict:
    """Casts each leaf to the abstract dtype where they differ (same sharding)."""
    flat_p, flat_a = dict(flatten(params)), dict(flatten(abstract))
    out = {p: (x if x.dtype == flat_a[p].dtype else
               jax.jit(lambda v, d=flat_a[p].dtype: v.astype(d), out_shardings=flat_a[p].sharding)(x))
           for p, x in flat_p.items()}
    return unflatten(out)
