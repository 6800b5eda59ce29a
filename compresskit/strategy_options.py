"""Command-line options made from the strategies' config dataclasses, so that every field of
every registered strategy (plugins included) has a flag without the CLI naming a strategy.

A field `mask_interval: int = 10` of earlybird's config becomes `--mask-interval INTEGER`; a
`bool` becomes `--rewind/--no-rewind`; a `Literal[...]` a choice; `X | None` the type of X. The
help is the field's `metadata["help"]`, followed by each strategy's default. A field two
strategies declare with different types gets no flag (it stays reachable with `--set`).
Options default to None: a flag that is not given leaves the strategy's own default.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from typing import Any

import click

# Base options the prune command declares itself (they also configure training).
_DECLARED = ("heads_ratio", "ffn_ratio", "seed")


@functools.cache
def strategy_options() -> tuple[click.Option, ...]:
    from compresskit.registry import registered_strategies

    fields: dict[str, list[tuple[str, dataclasses.Field[Any], Any]]] = {}
    for name, strategy_class in registered_strategies().items():
        config = strategy_class.Config
        hints = typing.get_type_hints(config)
        for field in dataclasses.fields(config):
            if field.name not in _DECLARED:
                fields.setdefault(field.name, []).append((name, field, hints[field.name]))
    return tuple(
        option
        for field_name, uses in sorted(fields.items())
        if (option := _option(field_name, uses))
    )


def _option(name: str, uses: list[tuple[str, dataclasses.Field[Any], Any]]) -> click.Option | None:
    kinds = {_kind(hint) for _, _, hint in uses}
    if len(kinds) != 1 or None in kinds:
        return None  # declared with different types, or a type no flag can carry: --set only
    (kind,) = kinds
    flag = "--" + name.replace("_", "-")
    help_text = next((f.metadata["help"] for _, f, _ in uses if "help" in f.metadata), "")
    help_text = f"{help_text} [{_defaults(uses)}]".strip()
    if kind == "flag":
        return click.Option([f"{flag}/--no-{flag[2:]}", name], default=None, help=help_text)
    click_type = click.Choice(list(kind[1])) if isinstance(kind, tuple) else kind
    return click.Option([flag, name], type=click_type, default=None, help=help_text)


def _kind(hint: Any) -> Any:
    """What flag a config field's annotation makes: "flag" for bool, a click type, ("choice",
    values) for a Literal of strings; None if none fits."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return _kind(rest[0]) if len(rest) == 1 else None
    if typing.get_origin(hint) is typing.Literal:
        return ("choice", args) if all(isinstance(a, str) for a in args) else None
    return {bool: "flag", int: click.INT, float: click.FLOAT, str: click.STRING}.get(hint)


def _defaults(uses: list[tuple[str, dataclasses.Field[Any], Any]]) -> str:
    values = {strategy: _default(field) for strategy, field, _ in uses}
    if len(values) > 1 and len(set(map(repr, values.values()))) == 1:
        return f"default {next(iter(values.values()))}"
    return ", ".join(f"{strategy}: {value}" for strategy, value in values.items())


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        value = field.default
        return round(value, 4) if isinstance(value, float) else value
    return "required"
