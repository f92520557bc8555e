"""lmforge.weights — model parameters in and out, born sharded.

- :func:`load_params`: a run folder (parameters of its latest or a given checkpoint, nothing else),
  a Hugging Face folder or an lmforge model folder, placed straight into their shards on a mesh.
- :class:`Checkpointer`: a run's orbax checkpoints (the trainer's full state with the data
  iterator; :meth:`Checkpointer.restore_params` reads the parameters alone).
- Hugging Face safetensors in and out (``weights.hf``), the lmforge model folder (``weights.folder``),
  adapter checkpoints (``weights.adapters``).
"""

from lmforge.weights.checkpoint import CheckpointError, Checkpointer
from lmforge.weights.folder import (
    MODEL_FILE,
    PARAMS_FILE,
    WeightsError,
    model_config_from_dict,
    read_model_config,
    read_model_folder,
    save_model_folder,
    write_model_config,
)
from lmforge.weights.hf import is_transformers_config
from lmforge.weights.load import (LoadedModel, check_init_from, load_params, place, refuse_reward_model, source_kind,
                                  source_model_config, write_base)

__all__ = [
    "CheckpointError", "Checkpointer", "LoadedModel", "MODEL_FILE", "PARAMS_FILE", "WeightsError", "check_init_from",
    "is_transformers_config", "load_params", "model_config_from_dict", "place", "read_model_config", "refuse_reward_model", "read_model_folder", "save_model_folder", "source_kind",
    "source_model_config", "write_base", "write_model_config",
]
