"""Configs from code: a YAML path, a dict or a pydantic config, with keyword settings and
`--set`-style overrides on top, validated exactly as the command line validates them."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from multisample.engine.config import ConfigError, PoolConfig
from multisample.engine.config_files import (
    Override,
    check_depth,
    format_validation_error,
    read_config,
    validate_config,
)

ConfigSource = BaseModel | Mapping[str, Any] | str | os.PathLike[str] | None
"""What a config may be given as: a pydantic config (SynthesizeConfig, ...), a dict of
the YAML's settings, a YAML file's path, or None (every setting a default or a keyword)."""

C = TypeVar("C", bound=BaseModel)

POOL_FIELDS = tuple(PoolConfig.model_fields)
"""The settings a run takes from the pool it is given when its config names no models."""


def config_data(source: ConfigSource) -> tuple[dict[str, Any], str | None, str | None]:
    """The settings of `source` as plain data, with the YAML file and its text if it is one."""
    if source is None:
        return {}, None, None
    if isinstance(source, BaseModel):
        return source.model_dump(mode="json"), None, None
    if isinstance(source, Mapping):
        return copy.deepcopy(dict(source)), None, None
    if isinstance(source, str | os.PathLike):
        text, data, _ = read_config(source)
        return data, str(source), text
    raise TypeError(
        f"config: expected a YAML path, a dict or a pydantic config, got {type(source).__name__}"
    )


def pool_config(source: ConfigSource) -> PoolConfig:
    """A pool's config: a PoolConfig (or any run config: its models and pool settings), a
    dict of those settings, or a YAML file (a run config's file too: its other settings
    are left to the runs)."""
    if isinstance(source, PoolConfig):
        return PoolConfig.model_validate(source.model_dump(mode="json", include=set(POOL_FIELDS)))
    data, path, text = config_data(source)
    if path is not None:
        data = {k: v for k, v in data.items() if k in POOL_FIELDS}
    return _validate(PoolConfig, data, path, text, [])


def run_config(
    kind: type[C],
    source: ConfigSource,
    settings: Mapping[str, Any],
    overrides: Sequence[str],
    pool: PoolConfig | None,
) -> C:
    """`source` as a `kind` config: keyword `settings` replace its top-level fields,
    then each `overrides` entry (PATH=VALUE, as `--set`) sets a nested one. With a
    `pool`, a config that names no models takes the pool's; one that does must name
    the same models as the pool."""
    data, path, text = config_data(source)
    # A path is a string in a config (output_dir=Path(...) is what a caller writes).
    data.update({k: _plain(v) for k, v in copy.deepcopy(dict(settings)).items()})
    applied = [Override.parse(text_).apply(data) for text_ in overrides]
    if pool is not None and "models" not in data:
        given = pool.model_dump(mode="json")
        data.update({k: given[k] for k in POOL_FIELDS if k not in data})
    config = _validate(kind, data, path, text, applied)
    if pool is not None:
        mine = [m.model_dump(mode="json") for m in getattr(config, "models", [])]
        if mine != [m.model_dump(mode="json") for m in pool.models]:
            raise ConfigError(
                f"{path or 'config'}: models: not the pool's models ({_names(config)} vs "
                f"{pool.model_names()}); leave `models` out to run on the pool's"
            )
    return config


def _plain(value: Any) -> Any:
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def _names(config: BaseModel) -> list[str]:
    return config.model_names() if isinstance(config, PoolConfig) else []


def _validate(
    kind: type[C],
    data: dict[str, Any],
    path: str | None,
    text: str | None,
    applied: list[Override],
) -> C:
    check_depth(data, path or "config")
    if path is not None and text is not None:
        return validate_config(Path(path), kind, text, data, applied)
    try:
        return kind.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "config", data, None, applied)) from None
