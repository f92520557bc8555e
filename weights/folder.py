"""The lmforge model folder and the model config file of a run folder.

A *model folder* is ``model.json`` (the :class:`ModelConfig`) + ``params.safetensors`` (lmforge's
parameter paths as tensor names: ``blocks.0.attn.q.kernel``), optionally with ``tokenizer/``. It is
what ``lmforge convert`` writes from a Hugging Face folder, and one of the sources
``load_params`` reads. A *run folder* (``lmforge run``'s workdir) also holds ``model.json``: the
model it trains, with the vocabulary size resolved, so its checkpoints can be read without the
task's config.

Choices:
- safetensors (Hugging Face's format: no pickle, memory-mapped, one tensor read at a time), not
  orbax: a model folder is an exchange format, readable without JAX.
- ``model.json`` is the dataclass as JSON; unknown or mistyped fields are one-line errors naming
  the file.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import typing

import numpy as np

from lmforge.model import LoRAConfig, ModelConfig
from lmforge.model.paths import flatten, unflatten

MODEL_FILE, PARAMS_FILE = "model.json", "params.safetensors"


class WeightsError(ValueError):
    """A weights source that cannot be used: missing, of another kind, or not fitting the model."""


def not_json(path: pathlib.Path | str, e: json.JSONDecodeError, expected: str) -> str:
    """One line for a file that does not parse as JSON: where (line and column), what the parser
    said, whether the file ends early (a truncated write), and what the file should hold."""
    what = e.msg.removesuffix(" at").strip()    # json's "Invalid control character at" reads "... at: line 1"
    what = what[:1].lower() + what[1:]
    doc = (e.doc or "").rstrip()
    note = "; the file is empty" if not doc else "; the file ends there: truncated?" if e.pos >= len(doc) else ""
    return f"{path}: not valid JSON ({what}, line {e.lineno} column {e.colno}{note}); expected {expected}"


def model_config_to_json(cfg: ModelConfig) -> str:
    return json.dumps(dataclasses.asdict(cfg), indent=2) + "\n"


def model_config_from_dict(fields: dict, *, source: str = "model.json") -> ModelConfig:
    """The inverse of ``dataclasses.asdict``: lists back to tuples, ``lora`` back to a LoRAConfig."""
    if not isinstance(fields, dict):
        raise WeightsError(f"{source}: expected a JSON object of ModelConfig fields")
    known = {f.name: f for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise WeightsError(f"{source}: unknown ModelConfig field(s) {unknown}")
    hints = typing.get_type_hints(ModelConfig)
    values = {}
    for name, value in fields.items():
        if name == "lora":
            lora = dict(value or {})
            if "targets" in lora:
                lora["targets"] = tuple(lora["targets"])
            try:
                value = LoRAConfig(**lora)
            except TypeError as e:
                raise WeightsError(f"{source}: lora: {e}") from None
        elif isinstance(value, list) and "tuple" in str(hints.get(name)):
            value = tuple(value)
        values[name] = value
    try:
        return ModelConfig(**values)
    except (TypeError, ValueError) as e:
        raise WeightsError(f"{source}: {e}") from None


def write_model_config(directory: pathlib.Path, cfg: ModelConfig) -> pathlib.Path:
    """Writes ``directory/model.json`` (atomically); returns its path."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / MODEL_FILE
    tmp = path.with_name(f".{MODEL_FILE}.tmp")
    tmp.write_text(model_config_to_json(cfg))
    tmp.replace(path)
    return path


def read_model_config(directory: pathlib.Path) -> ModelConfig:
    path = pathlib.Path(directory) / MODEL_FILE
    if not path.is_file():
        raise WeightsError(f"{directory} has no {MODEL_FILE}")
    try:
        fields = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise WeightsError(not_json(path, e, "a JSON object: the model's ModelConfig fields")) from None
    return model_config_from_dict(fields, source=str(path))


STORED_DTYPES = ("float32", "bfloat16", "float16")   # what an exchange folder's tensors may be written as


class DtypeRangeError(ValueError):
    """Weights that the asked dtype cannot hold (float16's range)."""


def cast_tensors(tensors: dict, dtype: str | None) -> dict:
    """``{name: array}`` with each floating-point array as ``dtype`` (one of :data:`STORED_DTYPES`; None:
    as they are), contiguous, for safetensors. bfloat16 keeps float32's range; float16 does not, so
    weights past its largest value (65504) raise :class:`DtypeRangeError` naming the tensor and its largest
    value, rather than being written as inf. Raises ValueError for another ``dtype``."""
    import ml_dtypes   # pylint: disable=import-outside-toplevel  (jax's own dependency: numpy's bfloat16)

    if dtype is not None and dtype not in STORED_DTYPES:
        raise ValueError(f"dtype {dtype!r}: expected one of {', '.join(STORED_DTYPES)}")
    want = None if dtype is None else np.dtype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)
    out = {}
    for name, value in tensors.items():
        x = np.asarray(value)
        floating = np.issubdtype(x.dtype, np.floating) or x.dtype == ml_dtypes.bfloat16
        if want is not None and floating and x.dtype != want:
            if want == np.float16 and x.size:
                top = float(np.max(np.abs(x[np.isfinite(x)]), initial=0.0))
                if top > float(np.finfo(np.float16).max):
                    raise DtypeRangeError(f"{name}: values up to {top:.4g} pass float16's largest, 65504; "
                                     f"write bfloat16 (float32's range) or float32")
            x = x.astype(want)
        out[name] = np.ascontiguousarray(x)
    return out


def save_model_folder(directory: pathlib.Path, cfg: ModelConfig, params: dict, *,
                      dtype: str | None = None) -> pathlib.Path:
    """Writes a model folder: ``model.json`` + ``params.safetensors`` (host numpy copies of ``params``,
    floating-point ones as ``dtype`` when given: :func:`cast_tensors`; ``load_params`` casts them back
    to the model's ``param_dtype`` on reading). Raises ValueError as :func:`cast_tensors` does, before
    anything is written."""
    from safetensors.numpy import save_file

    directory = pathlib.Path(directory)
    tensors = cast_tensors(dict(flatten(params)), dtype)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(directory / PARAMS_FILE))
    write_model_config(directory, cfg)
    return directory


def is_model_folder(directory: pathlib.Path) -> bool:
    directory = pathlib.Path(directory)
    return (directory / MODEL_FILE).is_file() and (directory / PARAMS_FILE).is_file()


def read_model_folder(directory: pathlib.Path) -> tuple[ModelConfig, dict]:
    """(ModelConfig, nested params of numpy arrays) of a model folder, on the host."""
    from safetensors.numpy import load_file

    directory = pathlib.Path(directory)
    cfg = read_model_config(directory)
    try:
        tensors = load_file(str(directory / PARAMS_FILE))
    except Exception as e:  # safetensors raises its own error types for truncated/corrupt files
        raise WeightsError(f"{directory / PARAMS_FILE}: not a readable safetensors file "
                           f"({str(e).splitlines()[0][:120]})") from None
    return cfg, unflatten(tensors)
