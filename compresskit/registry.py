"""Name -> strategy registry.

Built-in strategies register with the `register_strategy` decorator when their module is
imported; third-party packages declare an entry point in the group `compresskit.strategies`
(`name = "package.module:StrategyClass"`). Nothing is imported until the registry is first
asked, so `import compresskit` and `compresskit --help` stay fast.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points, packages_distributions
from typing import TYPE_CHECKING, Any, TypeVar

from compresskit.errors import CompressKitError, UnknownStrategyError

if TYPE_CHECKING:
    from compresskit.strategies.base import Strategy

ENTRY_POINT_GROUP = "compresskit.strategies"

# Modules whose import registers the built-in strategies.
_BUILTIN_MODULES = (
    "compresskit.strategies.magnitude",
    "compresskit.strategies.random",
    "compresskit.strategies.taylor",
    "compresskit.strategies.earlybird",
)

_registry: dict[str, type[Strategy]] = {}
_discovered = False

S = TypeVar("S", bound="type[Strategy]")


@dataclass(frozen=True)
class StrategyInfo:
    name: str
    kind: str
    provider: str
    description: str


def register_strategy(name: str) -> Callable[[S], S]:
    """Class decorator: make a Strategy subclass available as `name` (lowercase)."""
    if not name or name != name.lower() or not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"strategy names are lowercase words, got {name!r}")

    def decorate(cls: S) -> S:
        existing = _registry.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(
                f"strategy {name!r} is already registered by "
                f"{existing.__module__}.{existing.__qualname__}"
            )
        cls.name = name
        _registry[name] = cls
        return cls

    return decorate


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    for module in _BUILTIN_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name != module:  # a real missing dependency, not a not-yet-written module
                raise
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in _registry:
            continue
        try:
            cls = ep.load()
        except Exception as err:
            raise CompressKitError(
                f"the strategy plugin {ep.name!r} ({ep.value}) failed to import: {err}"
            ) from err
        register_strategy(ep.name)(cls)


def strategy_names() -> list[str]:
    _discover()
    return sorted(_registry)


def get_strategy_class(name: str) -> type[Strategy]:
    _discover()
    try:
        return _registry[name]
    except KeyError:
        raise UnknownStrategyError(
            f"unknown strategy {name!r}; known strategies: {', '.join(sorted(_registry))}"
        ) from None


def get_strategy(name: str, **options: Any) -> Strategy:
    """Build a strategy by name: `get_strategy("magnitude", heads_ratio=1/3, ffn_ratio=0.4)`."""
    return get_strategy_class(name)(**options)


def strategy_from_dict(data: dict[str, Any]) -> Strategy:
    """Rebuild a strategy from `Strategy.to_dict()` (as stored in compresskit.json)."""
    cls = get_strategy_class(data["strategy"])
    return cls(cls.Config.from_dict(data.get("config", {})))


def describe(name: str) -> StrategyInfo:
    cls = get_strategy_class(name)
    summary = (cls.__doc__ or "").strip().split("\n\n")[0]  # the first paragraph
    top = cls.__module__.split(".")[0]
    provider = packages_distributions().get(top, [top])[0]
    return StrategyInfo(name, cls.kind, provider, " ".join(summary.split()))
