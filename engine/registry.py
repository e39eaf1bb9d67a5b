"""Registries of components by kind: strategies, rewards, constraints and bandit policies
are each listed once, in a registry, and the config's union of their settings is derived
from it (search/registry.py, engine/rewards/registry.py, engine/rewards/constraints.py,
bandits/policies/registry.py).

A component's settings class names its kind once, as a `kind: Literal["..."]` field;
`by_kind` keys a registry by it and `tagged_union` turns the registry's classes into the
pydantic union that configs (and so the JSON schema) use. Strategies, rewards and policies
may also come from other installed packages, through the entry-point groups in `GROUPS`
(`plugins` loads them): such a component is in the registry as if listed there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from typing import Annotated, Any, TypeVar, Union, get_args

from pydantic import BaseModel, Field

S = TypeVar("S", bound=type[BaseModel])
C = TypeVar("C")


def kind_of(cls: type[BaseModel]) -> str:
    """The value of `cls`'s `kind: Literal["..."]` field."""
    (kind,) = get_args(cls.model_fields["kind"].annotation)
    return str(kind)


def by_kind(*classes: S) -> dict[str, S]:
    """`classes` by their kind, in the order given; two classes of one kind are an error."""
    return keyed(classes, kind_of)


def keyed(components: Iterable[C], kind: Callable[[C], str]) -> dict[str, C]:
    """`components` by `kind`, in their order; a kind given twice is a TypeError."""
    registry: dict[str, C] = {}
    for component in components:
        name = kind(component)
        if name in registry:
            raise TypeError(f"kind {name!r} registered twice: {registry[name]} and {component}")
        registry[name] = component
    return registry


def tagged_union(classes: Iterable[type[BaseModel]]) -> Any:
    """`A | B | ...` discriminated by `kind`: pydantic picks the class from that field."""
    return Annotated[Union[tuple(classes)], Field(discriminator="kind")]  # noqa: UP007


GROUPS = {
    "multisample.strategies": "a (settings class, run function) pair",
    "multisample.rewards": "a reward spec class (BaseRewardSpec)",
    "multisample.policies": "a bandit policy class (Policy)",
}
"""The entry-point groups a package registers components under, and what each entry
names ("kind = package.module:object" in its pyproject's [project.entry-points.GROUP])."""


class PluginError(ImportError):
    """An installed package registers a component that cannot be loaded or whose kind is
    taken."""


def with_plugins(group: str, builtins: Iterable[C], kind: Callable[[C], str]) -> dict[str, C]:
    """The components of one registry by `kind`: `builtins` in their order, then what
    installed packages register under entry-point `group` (one of `GROUPS`), in name
    order. A kind registered twice is refused: a builtin's is a TypeError (a bug here), a
    plugin's a PluginError naming the entry point, as is one that fails to load."""
    registry = keyed(builtins, kind)
    for entry in sorted(entry_points(group=group), key=lambda e: e.name):
        where = f"entry point {entry.name!r} of {group} ({entry.value}"
        where += f", package {entry.dist.name})" if entry.dist is not None else ")"
        try:
            component = entry.load()
            name = kind(component)
        except Exception as exc:
            raise PluginError(
                f"{where} does not load as {GROUPS[group]}: {type(exc).__name__}: {exc}"
            ) from exc
        if name in registry:
            raise PluginError(f"{where}: kind {name!r} is taken by {registry[name]}")
        registry[name] = component
    return registry
