"""The strategy contract. A strategy decides *what* to remove, as per-head and per-neuron
scores; the shared helpers turn scores into a PruningPlan; only the pruner removes.

A strategy is a class with a frozen, validated config dataclass:

    @register_strategy("mine")
    class Mine(Strategy):
        '''One line shown by `compresskit strategies`.'''
        Config = MineConfig            # a StrategyConfig subclass
        def scores(self, model, batches=None) -> Scores: ...
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from compresskit.errors import ConfigError
from compresskit.plan import PruningPlan, plan_from_scores

Scope = Literal["layer", "global"]


@dataclass(frozen=True)
class StrategyConfig:
    """Settings every strategy shares. Ratios are the fraction of heads / FFN neurons to
    remove, in [0, 1); `round_to` makes every FFN width a multiple of it."""

    heads_ratio: float = 0.0
    ffn_ratio: float = 0.0
    heads_scope: Scope = "layer"
    ffn_scope: Scope = "global"
    round_to: int = 1
    seed: int = 0

    version: ClassVar[int] = 1

    def __post_init__(self) -> None:
        for name in ("heads_ratio", "ffn_ratio"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not 0.0 <= value < 1.0
            ):
                raise ConfigError(
                    f"{name} must be a number in [0, 1) (the fraction removed), got {value!r}"
                )
        for name in ("heads_scope", "ffn_scope"):
            if getattr(self, name) not in ("layer", "global"):
                raise ConfigError(
                    f"{name} must be 'layer' or 'global', got {getattr(self, name)!r}"
                )
        if not _is_int(self.round_to) or self.round_to < 1:
            raise ConfigError(f"round_to must be a positive integer, got {self.round_to!r}")
        if not _is_int(self.seed):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> StrategyConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown option(s) {', '.join(unknown)} for {cls.__name__}; "
                f"known: {', '.join(sorted(known))}"
            )
        return cls(**values)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class Scores:
    """Per layer, one score per head / FFN neuron the model has now (higher = keep)."""

    heads: list[torch.Tensor]
    ffn: list[torch.Tensor]


class Strategy:
    """Base class of every strategy; see the module docstring."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "one-shot"
    needs_data: ClassVar[bool] = False
    Config: ClassVar[type[StrategyConfig]] = StrategyConfig
    # Config values that replace the defaults when pre-training (`--task mlm`), unless set.
    pretraining_defaults: ClassVar[Mapping[str, Any]] = MappingProxyType({})

    def __init__(self, config: StrategyConfig | None = None, **options: Any) -> None:
        if config is not None and options:
            raise ConfigError("pass either a config object or keyword options, not both")
        if config is None:
            config = self.Config.from_dict(options)
        elif not isinstance(config, self.Config):
            raise ConfigError(
                f"{type(self).__name__} takes a {self.Config.__name__}, got {type(config).__name__}"
            )
        self.config = config

    def scores(
        self, model: nn.Module, batches: Iterable[dict[str, torch.Tensor]] | None = None
    ) -> Scores:
        raise NotImplementedError

    def plan(
        self, model: nn.Module, batches: Iterable[dict[str, torch.Tensor]] | None = None
    ) -> PruningPlan:
        """Score `model` and keep the best heads and neurons at the configured ratios."""
        return self.plan_from_scores(model, self.scores(model, batches))

    def plan_from_scores(self, model: nn.Module, scores: Scores) -> PruningPlan:
        """Turn scores of `model` (as it is now) into a plan with this strategy's config."""
        c = self.config
        return plan_from_scores(
            model,
            scores.heads,
            scores.ffn,
            heads_ratio=c.heads_ratio,
            ffn_ratio=c.ffn_ratio,
            heads_scope=c.heads_scope,
            ffn_scope=c.ffn_scope,
            round_to=c.round_to,
        )

    def to_dict(self) -> dict[str, Any]:
        """What `compresskit.json` records: enough to build the same strategy again."""
        return {
            "strategy": self.name,
            "config_type": type(self.config).__name__,
            "version": self.config.version,
            "config": self.config.to_dict(),
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"
