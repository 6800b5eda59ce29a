"""Name -> strategy registry.

Built-in strategies register with the `register_strategy` decorator when their module is
imported; third-party packages declare an entry point in the group `compresskit.strategies`
(`name = "package.module:StrategyClass"`). Nothing is imported until the registry is first
asked, so `import compresskit` and `compresskit --help` stay fast.

A plugin that fails to load (its module raises on import, or the entry point names something
that is not a Strategy subclass) disables only itself: the other strategies stay available,
one warning names it and its error, and asking for it by name raises UnknownStrategyError
saying why it failed to load.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points, packages_distributions
from typing import TYPE_CHECKING, Any, TypeVar

from compresskit.errors import UnknownStrategyError, one_line

if TYPE_CHECKING:
    from compresskit.strategies.base import Strategy

ENTRY_POINT_GROUP = "compresskit.strategies"
logger = logging.getLogger(__name__)

# Modules whose import registers the built-in strategies.
_BUILTIN_MODULES = (
    "compresskit.strategies.magnitude",
    "compresskit.strategies.random",
    "compresskit.strategies.taylor",
    "compresskit.strategies.fisher",
    "compresskit.strategies.earlybird",
    "compresskit.strategies.movement",
)

_registry: dict[str, type[Strategy]] = {}
_discovered = False
_failed: dict[str, str] = {}  # plugin name -> why it did not load, in one line
_warned = False

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
        if ep.name not in _registry:
            _load_plugin(ep)


def _load_plugin(ep: EntryPoint) -> None:
    """Register one plugin, or record why it cannot be: third-party code must not take the
    built-ins and the other plugins down with it."""
    from compresskit.strategies.base import Strategy

    try:
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, Strategy)):
            raise TypeError(f"{ep.value} is {_what(cls)}, not a Strategy subclass")
        register_strategy(ep.name)(cls)
    # SystemExit too: a plugin module that calls sys.exit() on import is broken, not a
    # request to end the command.
    except (Exception, SystemExit) as err:
        package = f", package {ep.dist.name}" if ep.dist is not None else ""
        _failed[ep.name] = (
            f"the strategy plugin {ep.name!r} ({ep.value}{package}) failed to load: "
            f"{type(err).__name__}: {one_line(err)}"
        )


def _what(obj: object) -> str:
    return f"the class {obj.__qualname__}" if isinstance(obj, type) else f"a {type(obj).__name__}"


def _warn_failed() -> None:
    """One warning per broken plugin, once: they are left out of what the caller sees."""
    global _warned
    if not _warned:
        _warned = True
        for reason in _failed.values():
            logger.warning("%s; the other strategies work without it", reason)


def strategy_names() -> list[str]:
    _discover()
    _warn_failed()
    return sorted(_registry)


def registered_strategies() -> dict[str, type[Strategy]]:
    """Name -> class of every strategy that loaded, without warning about those that did
    not (for building the command line; `compresskit strategies` and asking by name say)."""
    _discover()
    return dict(sorted(_registry.items()))


def get_strategy_class(name: str) -> type[Strategy]:
    _discover()
    if name in _failed:  # the error says all the warning would: one line, not two
        raise UnknownStrategyError(
            f"strategy {name!r} is not available: {_failed[name]}; "
            "fix or uninstall the package that provides it"
        )
    if name not in _registry:
        broken = f"; plugins that failed to load: {', '.join(_failed)}" if _failed else ""
        raise UnknownStrategyError(
            f"unknown strategy {name!r}; known strategies: {', '.join(sorted(_registry))}{broken}"
        )
    _warn_failed()
    return _registry[name]


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
