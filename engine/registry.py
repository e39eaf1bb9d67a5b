"""Registries of components by kind: strategies, rewards, constraints and bandit policies
are each listed once, in a registry, and the config's union of their settings is derived
from it (search/registry.py, engine/rewards/registry.py, engine/rewards/constraints.py,
bandits/policies/registry.py).

A component's settings class names its kind once, as a `kind: Literal["..."]` field;
`by_kind` keys a registry by it and `tagged_union` turns the registry's classes into the
pydantic union that configs (and so the JSON schema) use.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, TypeVar, Union, get_args

from pydantic import BaseModel, Field

S = TypeVar("S", bound=type[BaseModel])


def kind_of(cls: type[BaseModel]) -> str:
    """The value of `cls`'s `kind: Literal["..."]` field."""
    (kind,) = get_args(cls.model_fields["kind"].annotation)
    return str(kind)


def by_kind(*classes: S) -> dict[str, S]:
    """`classes` by their kind, in the order given; two classes of one kind are an error."""
    registry: dict[str, S] = {}
    for cls in classes:
        kind = kind_of(cls)
        if kind in registry:
            raise TypeError(f"kind {kind!r} registered twice: {registry[kind]} and {cls}")
        registry[kind] = cls
    return registry


def tagged_union(classes: Iterable[type[BaseModel]]) -> Any:
    """`A | B | ...` discriminated by `kind`: pydantic picks the class from that field."""
    return Annotated[Union[tuple(classes)], Field(discriminator="kind")]  # noqa: UP007
