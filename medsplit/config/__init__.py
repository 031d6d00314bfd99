"""Configuration: dataclasses are the schema, YAML files hold values, ``key=value``
overrides on the command line win. Unknown keys and wrong types are rejected with a
message naming the key. The resolved config is saved with every run.

* :mod:`~medsplit.config.schema`: the dataclasses, ``CHOICES``, :class:`ConfigError`.
* :mod:`~medsplit.config.loading`: YAML file + overrides -> :class:`Config` (``load_config``).
* :mod:`~medsplit.config.validation`: choices, ranges and keys that must agree (``validate``).
* :mod:`~medsplit.config.keys_help`: ``medsplit train --help``'s settings block.

The whole package is torch-free: loading a config must not import torch.
"""

from medsplit.config.keys_help import describe_keys, keys_help
from medsplit.config.loading import (
    config_from_dict,
    load_config,
    parse_override,
    with_overrides,
)
from medsplit.config.schema import (
    CHOICES,
    Config,
    ConfigError,
    DataConfig,
    ModelConfig,
    OutputConfig,
    SplitConfig,
    TrainConfig,
    default_data_root,
    protocol_module_names,
)
from medsplit.config.validation import (
    IMAGE_MULTIPLE,
    MIN_IMAGES_PER_CLIENT,
    PROCESS_PROTOCOLS,
    TASK_MODELS,
    validate,
)

__all__ = [
    "CHOICES", "IMAGE_MULTIPLE", "MIN_IMAGES_PER_CLIENT", "PROCESS_PROTOCOLS", "TASK_MODELS", "Config", "ConfigError",
    "DataConfig", "ModelConfig", "OutputConfig", "SplitConfig", "TrainConfig", "config_from_dict", "default_data_root",
    "describe_keys", "keys_help", "load_config", "parse_override", "protocol_module_names", "validate", "with_overrides",
]
