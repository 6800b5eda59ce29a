"""The strategy contract. A strategy decides *what* to remove, as per-head and per-neuron
scores; the shared helpers turn scores into a PruningPlan; only the pruner removes.

A strategy is a class with a frozen, validated config dataclass:

    @register_strategy("mine")
    class Mine(Strategy):
        '''One line shown by `compresskit strategies`.'''
        Config = MineConfig            # a StrategyConfig subclass
        def scores(self, model, batches=None) -> Scores: ...

A training-time strategy (`TrainingTimeStrategy`) decides while the model trains: the
training pipeline and the one Trainer callback (`compresskit.train.StrategyCallback`) talk to
it through the methods below only, so a plugin can be one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from compresskit.errors import ConfigError
from compresskit.plan import PruningPlan, plan_from_scores

Scope = Literal["layer", "global"]


def option_help(text: str) -> dict[str, str]:
    """Field metadata with the help of the field's command-line option:
    `eps: float = field(default=0.1, metadata=option_help("..."))`."""
    return {"help": text}


@dataclass(frozen=True)
class StrategyConfig:
    """Settings every strategy shares. Ratios are the fraction of heads / FFN neurons to
    remove, in [0, 1); `round_to` makes every FFN width a multiple of it."""

    heads_ratio: float = 0.0
    ffn_ratio: float = 0.0
    heads_scope: Scope = field(
        default="layer", metadata=option_help("Rank heads within each layer, or globally.")
    )
    ffn_scope: Scope = field(
        default="global", metadata=option_help("Rank FFN neurons within each layer, or globally.")
    )
    round_to: int = field(default=1, metadata=option_help("Keep FFN widths multiples of this."))
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
    """Per layer, one score per head / FFN neuron the model has now (higher = keep).

    `in_loss_units`: a head's score and a neuron's both estimate the loss a unit's removal
    costs (taylor, fisher), so a latency target compares them as they are; otherwise (weight
    norms, coefficients) they are in different units, and it puts each kind on its own scale
    first (compresskit/target.py).

    `example_gradients` (fisher): the per-example gate gradients the scores were summed from,
    with which a latency target weighs units removed together, not one by one
    (compresskit/interactions.py)."""

    heads: list[torch.Tensor]
    ffn: list[torch.Tensor]
    in_loss_units: bool = False
    example_gradients: ExampleGradients | None = None


@dataclass(frozen=True)
class ExampleGradients:
    """Per layer, ∂loss_n/∂gate of every unit for every example n scored: heads shaped
    (examples, heads), FFN neurons (examples, width), float32.

    `heads_removed_loss` / `ffn_removed_loss`: per layer, the loss added on the same examples
    with all of the layer's heads (FFN neurons) gated off, measured by forward passes. A
    second-order estimate is least sure of these removals: the last layer's attention alone
    carries [CLS] to a classifier, and ½ mean (Σ g)² put its removal at 0.017 where it cost
    0.34 (docs/latency-target.md)."""

    heads: list[torch.Tensor]
    ffn: list[torch.Tensor]
    heads_removed_loss: list[float] | None = None
    ffn_removed_loss: list[float] | None = None


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

    def scores_for_ratios(
        self, model: nn.Module, batches: Iterable[dict[str, torch.Tensor]] | None = None
    ) -> Scores:
        """The scores a plan at ratios uses (here: `scores`); a strategy whose `scores` also
        carry what only a per-layer target weighs (fisher's per-example gradients) skips it."""
        return self.scores(model, batches)

    def plan(
        self, model: nn.Module, batches: Iterable[dict[str, torch.Tensor]] | None = None
    ) -> PruningPlan:
        """Score `model` and keep the best heads and neurons at the configured ratios."""
        return self.plan_from_scores(model, self.scores_for_ratios(model, batches))

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


class TrainingTimeStrategy(Strategy):
    """A strategy that decides while the model trains. The contract, in the order a training
    loop uses it:

    1. `attach(model, as_submodule=...)` adds what the strategy needs (coefficients, score
       buffers, hooks); `detach()` removes it and leaves the model as before (bar what
       training changed). With `as_submodule=True` the added parameters become a submodule of
       the model (for DDP, which then averages their gradients; attach before wrapping).
       `begin(total_steps)` gives the step budget when training begins (for schedules).
    2. `parameters()` are the parameters it adds (none by default) and `param_group()` their
       optimizer group: no weight decay, the strategy's own learning rate if it has one.
    3. `extra_gradient(parameter)`: what the strategy adds to the gradient of one of its own
       parameters in each optimizer step (a regulariser's gradient: L1 gives λ·sign(c)).
       `gradient_hooks(scale)` adds it *inside backward*, so gradient clipping covers it like
       any other gradient; `scale` is 1 / the gradient accumulation steps.
       `regularizer()` is the same penalty as a loss term, for loops that add it to the loss.
    4. `before_optimizer_step()` runs after clipping, before the optimizer step (gradients are
       there to read); `on_step(step)` runs after optimizer step `step` and returns True once
       the decision is made (a ticket, the end of a schedule, a cap). `end(step)`: training
       stopped first; decide with what there is.
    5. `finish(model)` returns the PruningPlan, in the dense model's indices; after
       `detach()`, `prepare_slim(model)` sets the weights the slim model starts from, by
       default the trained ones. `restarts_training` says what the slim model does then:
       False (the default) continues the one step budget where the search stopped (schedule,
       optimizer moments and data stream carry on, train/handoff.py); True trains the whole
       budget again from step 0 (EarlyBERT's fine-tuning, after rewinding the weights).
    6. `state_dict()` / `load_state_dict(state)`: JSON-ready state for checkpoints, so that a
       resumed search decides the same; the added parameters' values travel with the model's
       weights (as a submodule) and their moments with the optimizer.
    7. `record()`: how the decision went, for the report and the figure (`SearchRecord`).
    """

    kind: ClassVar[str] = "training-time"
    # Options under which the strategy decides within a few dozen steps of a tiny model, for
    # tests and smoke runs (every test of the contract runs each registered strategy so).
    quick_options: ClassVar[Mapping[str, Any]] = MappingProxyType({})

    # --- 1. attach ------------------------------------------------------------------------------
    def attach(self, model: nn.Module, *, as_submodule: bool = False) -> Any:
        """Start a new search on `model`; returns what was added (strategy-specific)."""
        raise NotImplementedError

    def detach(self) -> None:
        raise NotImplementedError

    @property
    def attached(self) -> bool:
        raise NotImplementedError

    def begin(self, total_steps: int) -> None:
        """Training begins with a budget of `total_steps` optimizer steps (for schedules)."""

    # --- 2. parameters ------------------------------------------------------------------------
    def parameters(self) -> list[nn.Parameter]:
        return []

    def param_group(self) -> dict[str, Any] | None:
        """The added parameters as an optimizer group (no weight decay); None without any."""
        params = self.parameters()
        return {"params": params, "weight_decay": 0.0} if params else None

    # --- 3. gradients before clipping ---------------------------------------------------------
    def extra_gradient(self, parameter: nn.Parameter) -> torch.Tensor | None:
        return None

    def regularizer(self) -> torch.Tensor | None:
        return None

    def gradient_hooks(self, scale: float = 1.0) -> list[Any]:
        """Hook `extra_gradient` into backward for each added parameter; returns the handles.
        Tensor hooks change a gradient before it is accumulated (and before DDP averages it),
        so the training loop's clipping sees it."""

        def hook_for(parameter: nn.Parameter) -> Any:
            def add(grad: torch.Tensor) -> torch.Tensor:
                extra = None if self.decided else self.extra_gradient(parameter)
                return grad if extra is None else grad + scale * extra

            return add

        return [p.register_hook(hook_for(p)) for p in self.parameters()]

    # --- 4. steps -----------------------------------------------------------------------------
    def before_optimizer_step(self) -> None:
        """After clipping, before the optimizer step."""

    def on_step(self, step: int) -> bool:
        raise NotImplementedError

    @property
    def decided(self) -> bool:
        raise NotImplementedError

    def end(self, step: int) -> None:
        raise NotImplementedError

    # --- 5. the decision ----------------------------------------------------------------------
    def finish(self, model: nn.Module) -> PruningPlan:
        return self.plan(model)

    def prepare_slim(self, model: nn.Module) -> None:
        """Set the weights the slim model starts from (after `detach`); by default leave the
        trained weights."""

    @property
    def restarts_training(self) -> bool:
        """Whether the slim model trains the whole budget again from step 0 (True) or
        continues the budget where the search stopped (False)."""
        return False

    # --- 6. resume, 7. report ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def record(self) -> SearchRecord:
        raise NotImplementedError


@dataclass(frozen=True)
class SearchRecord:
    """How a training-time strategy decided, for report.json and the figure.

    `state` is the strategy's word for how it ended ("drawn", "capped", "scheduled", ...);
    `decided_at` the optimizer step of the decision; `history` one JSON-ready dict per step the
    strategy looked (`step` and the values of `series`); `plot` says how to draw it: `title`,
    `ylabel`, `series` (keys of the history entries), optional `threshold` and its `label`.
    `settings` holds the strategy's own numbers worth reporting. The pipeline adds `steps`
    (trained in the search) and `resumed_from_step`.
    """

    state: str
    decided_at: int | None
    history: list[dict[str, Any]]
    plot: dict[str, Any]
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    steps: int = 0
    resumed_from_step: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchRecord:
        return cls(**data)
