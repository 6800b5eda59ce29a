"""Earlybird's own tests inside a user's `transformers.Trainer` (StrategyCallback): its
coefficients' optimizer group, schedule and L1 term, where its search stops, and how a search
that runs out of steps ends (`TicketDetector.close`, `EarlyBirdStrategy.end_search`). What
every training-time strategy must do under the callback is tested in test_training_time.py."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from conftest import tiny_model
from helpers import RandomTokens
from transformers import Trainer, TrainerCallback, TrainingArguments

import compresskit
from compresskit.errors import ConfigError
from compresskit.train.callback import StrategyCallback

# isort: split
# (ruff files compresskit.strategies, which installs from strategies/, under third-party)
from compresskit.strategies.earlybird import EarlyBirdStrategy, SlimmingMask, TicketDetector


def uncapped(**options: Any) -> EarlyBirdStrategy:
    """Earlybird without the default search cap (a fifth of the budget), which these short
    runs would hit before what they test."""
    return EarlyBirdStrategy(**{"max_search_fraction": None, **options})


# --- TicketDetector.close against hand-computed sequences --------------------------------------
# One layer, 4 heads, 8 FFN neurons; window 3, eps 0.3. Distances to the two masks before:
#   step  heads  ffn        heads d   ffn d       largest
#   10    1100   11110000   -         -           -
#   20    1010   11110000   .5        0           .5
#   30    1010   11101000   .5, 0     .25, .25    .5     (first full window: no ticket)
# Closing at 40 with SETTLED: heads 0, 0; ffn .25, 0 -> .25 < .3, the ticket.
# Closing at 40 with MOVED:   heads 0, 0; ffn .75, .75 -> not below eps.
FED = [(10, "1100", "11110000"), (20, "1010", "11110000"), (30, "1010", "11101000")]
LAST_FED = SlimmingMask.from_bits(["1010"], ["11101000"])
SETTLED = SlimmingMask.from_bits(["1010"], ["11101000"])
MOVED = SlimmingMask.from_bits(["1010"], ["00011110"])


def fed_detector() -> TicketDetector:
    detector = TicketDetector(window=3, eps=0.3)
    for step, heads, ffn in FED:
        assert detector.update(step, SlimmingMask.from_bits([heads], [ffn])) is False
    return detector


def test_close_after_the_last_mask_draws_the_ticket_when_the_new_mask_passes():
    detector = fed_detector()
    detector.close(40, SETTLED)
    assert detector.state == "drawn"
    assert (detector.final_step, detector.final_mask) == (40, SETTLED)
    last = detector.history[-1]
    assert (last.step, last.heads, last.ffn) == (40, (0.0, 0.0), (0.25, 0.0))
    assert last.max_distance == 0.25


def test_close_after_the_last_mask_caps_with_the_new_mask_when_it_does_not_pass():
    detector = fed_detector()
    detector.close(40, MOVED)
    assert detector.state == "capped"
    assert (detector.final_step, detector.final_mask) == (40, MOVED)
    assert [r.step for r in detector.history] == [10, 20, 30, 40]
    assert detector.history[-1].max_distance == 0.75


def test_close_at_the_step_of_the_last_mask_caps_with_that_mask():
    detector = fed_detector()
    detector.close(30, MOVED)  # a mask was fed at 30 already: this one is not fed
    assert detector.state == "capped"
    assert (detector.final_step, detector.final_mask) == (30, LAST_FED)
    assert [r.step for r in detector.history] == [10, 20, 30]


def test_close_on_an_empty_detector_caps_at_that_step():
    detector = TicketDetector(window=3, eps=0.3)
    detector.close(7, MOVED)
    assert detector.state == "capped"
    assert (detector.final_step, detector.final_mask) == (7, MOVED)
    assert [(r.step, r.max_distance) for r in detector.history] == [(7, None)]


def test_close_after_the_search_is_over_changes_nothing():
    detector = fed_detector()
    detector.close(40, SETTLED)
    before = detector.to_dict()
    detector.close(50, MOVED)
    assert detector.to_dict() == before
    assert (detector.state, detector.final_step) == ("drawn", 40)


# --- EarlyBirdStrategy.end_search --------------------------------------------------------------
LAYERS, HEADS = 3, 4


def strategy_with_coefficients(
    *, seed: int = 0, **options: Any
) -> tuple[EarlyBirdStrategy, torch.nn.Module]:
    """A strategy attached to a tiny BERT whose coefficients are distinct random values, except
    that head `i` of layer `i` is the smallest of its layer (so it is the one a plan prunes)."""
    model = tiny_model("bert", layers=LAYERS, heads=HEADS)
    strategy = uncapped(mask_interval=1, window=3, **options)
    coefficients = strategy.attach(model)
    scramble(coefficients.parameters(), seed)
    with torch.no_grad():
        for layer, heads in enumerate(coefficients.heads):
            heads[layer] = 0.01
    return strategy, model


def scramble(parameters: Any, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for c in parameters:
            c.copy_(torch.rand(c.shape, generator=g) + 0.5)


def test_end_search_draws_the_ticket_when_the_mask_now_passes_the_test():
    strategy, _ = strategy_with_coefficients()
    assert strategy.on_step(1) is False
    assert strategy.on_step(2) is False  # two identical masks: the window of 3 is not full
    strategy.end_search(3)
    assert (strategy.state, strategy.ticket_step) == ("drawn", 3)
    assert strategy.ticket_drawn


def test_end_search_caps_with_the_mask_now_and_the_plan_uses_the_scores_then():
    strategy, model = strategy_with_coefficients()
    strategy.on_step(1)
    coefficients = strategy.coefficients
    assert coefficients is not None
    with torch.no_grad():
        coefficients.ffn[0].mul_(-1)  # |c| unchanged: the same mask as at step 1
    strategy.end_search(4)
    assert (strategy.state, strategy.ticket_step) == ("capped", 4)
    assert strategy.ticket == strategy.current_mask()
    plan = strategy.plan(model)
    assert [lp.heads_kept for lp in plan.layers] == [(1, 2, 3), (0, 2, 3), (0, 1, 3)]
    scramble(coefficients.parameters(), seed=1)  # training goes on after the search
    assert strategy.plan(model) == plan
    assert strategy.current_mask() != strategy.ticket


# --- the callback in a plain Trainer -----------------------------------------------------------
# A coefficient step of 1e-9 rounds away at 1.0 in float32: the coefficients, and so every
# mask, stay exactly as they are, and the ticket is drawn as soon as the window is full.
FROZEN = 1e-9


class Spy(TrainerCallback):
    """Keeps `read(state, **trainer_objects)` at one Trainer event (e.g. "on_step_end")."""

    def __init__(self, event: str, read: Callable[..., Any]) -> None:
        self.seen: list[Any] = []

        def record(args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.seen.append(read(state, **kwargs))

        setattr(self, event, record)


def classifier() -> torch.nn.Module:
    return tiny_model("bert", "BertForSequenceClassification", layers=LAYERS, heads=HEADS)


def make_trainer(
    strategy: Any,
    tmp_path: Path,
    *,
    model: torch.nn.Module | None = None,
    stop_training: bool = True,
    spies: Sequence[TrainerCallback] = (),
    optimizers: tuple[Any, Any] = (None, None),
    **arguments: Any,
) -> Trainer:
    """A user's plain Trainer (8 steps at lr 1e-3 unless `arguments` say otherwise) running the
    search; `spies` run after the StrategyCallback."""
    args = TrainingArguments(
        output_dir=str(tmp_path),
        report_to="none",
        disable_tqdm=True,
        save_strategy="no",
        logging_strategy="no",
        per_device_train_batch_size=8,
        use_cpu=True,
        **{"max_steps": 8, "learning_rate": 1e-3, "seed": 0, **arguments},
    )
    return Trainer(
        model=model if model is not None else classifier(),
        args=args,
        train_dataset=RandomTokens(),
        callbacks=[StrategyCallback(strategy, stop_training=stop_training), *spies],
        optimizers=optimizers,
    )


def coefficient_group(optimizer: Any, strategy: EarlyBirdStrategy) -> dict[str, Any]:
    assert strategy.coefficients is not None
    ids = {id(p) for p in strategy.coefficients.parameters()}
    (group,) = [g for g in optimizer.param_groups if {id(p) for p in g["params"]} & ids]
    return group


def test_the_callback_refuses_a_one_shot_strategy():
    with pytest.raises(ConfigError, match="needs a training-time strategy"):
        StrategyCallback(compresskit.get_strategy("magnitude"))  # type: ignore[arg-type]


def test_the_coefficients_are_attached_when_training_begins(tmp_path):
    strategy = uncapped(mask_interval=2, window=3)

    def attached_and_learning(state: Any, **_: Any) -> bool:
        coefficients = strategy.coefficients
        return coefficients.attached and all(c.grad is not None for c in coefficients.parameters())

    seen = Spy("on_pre_optimizer_step", attached_and_learning)
    trainer = make_trainer(strategy, tmp_path, spies=[seen], max_steps=3)
    assert strategy.coefficients is None
    trainer.train()
    assert seen.seen == [True, True, True]  # hooked into the model the Trainer trains


@pytest.mark.parametrize(("coef_lr", "expected_lr"), [(0.05, 0.05), (None, 1e-3)])
def test_the_coefficients_are_their_own_optimizer_group_without_weight_decay(
    tmp_path, coef_lr, expected_lr
):
    strategy = uncapped(mask_interval=2, window=3, coef_lr=coef_lr)
    trainer = make_trainer(strategy, tmp_path, max_steps=2, weight_decay=0.01)
    trainer.train()
    group = coefficient_group(trainer.optimizer, strategy)
    assert group["params"] == list(strategy.coefficients.parameters())
    assert group["weight_decay"] == 0.0
    assert group["initial_lr"] == expected_lr
    assert len(trainer.optimizer.param_groups) == 3  # the Trainer's decay / no-decay, and ours


def test_the_coefficients_lr_follows_the_trainers_schedule(tmp_path):
    strategy = uncapped(mask_interval=2, window=3, coef_lr=0.05)

    def lrs(state: Any, optimizer: Any, **_: Any) -> tuple[float, float]:
        return optimizer.param_groups[0]["lr"], coefficient_group(optimizer, strategy)["lr"]

    used = Spy("on_pre_optimizer_step", lrs)  # the lr each optimizer step uses
    trainer = make_trainer(
        strategy, tmp_path, spies=[used], stop_training=False, max_steps=6, warmup_steps=2
    )
    trainer.train()  # LambdaLR zips its lambdas and base lrs strictly: it steps every step
    schedule = [0.0, 0.5, 1.0, 0.75, 0.5, 0.25]  # linear warmup over 2 steps, then decay to 6
    weights, coefficients = zip(*used.seen, strict=True)
    assert weights == pytest.approx([1e-3 * m for m in schedule])
    assert coefficients == pytest.approx([0.05 * m for m in schedule])
    assert len(trainer.lr_scheduler.base_lrs) == len(trainer.optimizer.param_groups)


def coefficient_grads(strategy: EarlyBirdStrategy) -> Spy:
    """The coefficients' gradients each optimizer step uses (after clipping)."""
    return Spy(
        "on_pre_optimizer_step",
        lambda state, **_: [c.grad.clone() for c in strategy.coefficients.parameters()],
    )


def test_the_l1_subgradient_is_added_while_searching_and_not_after(tmp_path):
    # Window 2, one mask per step, frozen coefficients: the ticket is drawn at step 2. The same
    # run without L1 (same seed, data and model) gives the gradients without it.
    runs = {}
    for lambdas in ((0.5, 0.25), (0.0, 0.0)):
        strategy = uncapped(
            mask_interval=1,
            window=2,
            coef_lr=FROZEN,
            lambda_heads=lambdas[0],
            lambda_ffn=lambdas[1],
        )
        seen = coefficient_grads(strategy)
        trainer = make_trainer(
            strategy, tmp_path, spies=[seen], stop_training=False, max_steps=4, max_grad_norm=0
        )
        trainer.train()
        assert strategy.ticket_step == 2
        runs[lambdas] = (strategy, seen.seen)
    strategy, with_l1 = runs[(0.5, 0.25)]
    _, without = runs[(0.0, 0.0)]
    coefficients = list(strategy.coefficients.parameters())  # heads of each layer, then FFN
    lambdas = [0.5] * LAYERS + [0.25] * LAYERS
    for step, (w, wo) in enumerate(zip(with_l1, without, strict=True), start=1):
        expected = [
            lam * torch.sign(c) if step <= 2 else torch.zeros_like(c)
            for lam, c in zip(lambdas, coefficients, strict=True)
        ]
        added = [x - y for x, y in zip(w, wo, strict=True)]
        assert all(torch.allclose(x, e, atol=1e-6) for x, e in zip(added, expected, strict=True))


def test_gradient_clipping_covers_the_l1_subgradient(tmp_path):
    # EarlyBERT puts L1 in the loss, so it is clipped with every other gradient: the norm of
    # all gradients an optimizer step uses, the coefficients' included, is at most the limit.
    strategy = uncapped(mask_interval=2, window=3, lambda_heads=10.0, lambda_ffn=10.0)
    model = classifier()

    def total_norm(state: Any, **_: Any) -> float:
        return float(torch.norm(torch.stack([p.grad.norm() for p in model.parameters()])))

    seen = Spy("on_pre_optimizer_step", total_norm)
    trainer = make_trainer(
        strategy, tmp_path, model=model, spies=[seen], max_steps=3, max_grad_norm=0.1
    )
    trainer.train()
    assert seen.seen and all(n <= 0.1 + 1e-5 for n in seen.seen)
    assert strategy.coefficients is not None
    assert all(id(c) in {id(p) for p in model.parameters()} for c in strategy.parameters())


def test_the_coefficients_gradients_do_not_carry_over_to_the_next_step(tmp_path):
    # The Trainer zeroes the model's gradients only; the coefficients are not in the model.
    strategy = uncapped(mask_interval=2, window=3)
    stale = Spy(
        "on_step_begin",
        lambda state, **_: [
            c.grad is not None and bool(c.grad.any()) for c in strategy.coefficients.parameters()
        ],
    )
    make_trainer(strategy, tmp_path, spies=[stale], max_steps=3).train()
    assert not any(any(step) for step in stale.seen)


def test_training_stops_at_the_ticket(tmp_path):
    strategy = uncapped(mask_interval=2, window=3, coef_lr=FROZEN)
    trainer = make_trainer(strategy, tmp_path, max_steps=20)
    trainer.train()
    assert (strategy.state, strategy.ticket_step) == ("drawn", 6)  # masks at 2, 4, 6
    assert trainer.state.global_step == 6


def test_without_stop_training_training_runs_to_the_end(tmp_path):
    strategy = uncapped(mask_interval=2, window=3, coef_lr=FROZEN)
    trainer = make_trainer(strategy, tmp_path, stop_training=False, max_steps=10)
    trainer.train()
    assert (strategy.state, strategy.ticket_step) == ("drawn", 6)
    assert trainer.state.global_step == 10
    assert [r.step for r in strategy.detector.history] == [2, 4, 6]
    assert strategy.coefficients.attached


def test_max_search_steps_caps_the_search_at_that_step(tmp_path):
    # Masks at 2 and at the cap (3): too few for a window of 3, whatever they are.
    strategy = uncapped(mask_interval=2, window=3, max_search_steps=3, coef_lr=0.05)
    trainer = make_trainer(strategy, tmp_path, max_steps=20)
    trainer.train()
    assert (strategy.state, strategy.ticket_step) == ("capped", 3)
    assert trainer.state.global_step == 3
    assert [r.step for r in strategy.detector.history] == [2, 3]


def test_when_training_ends_before_the_ticket_the_search_is_capped_at_the_last_step(tmp_path):
    # The schedule ends at 5; masks at 2 and 4 and, at the end, 5: no full window of 5.
    strategy = uncapped(mask_interval=2, window=5, eps=1e-9, coef_lr=0.05)
    trainer = make_trainer(strategy, tmp_path, max_steps=5)
    trainer.train()
    assert (strategy.state, strategy.ticket_step) == ("capped", 5)
    assert [r.step for r in strategy.detector.history] == [2, 4, 5]
    assert strategy.ticket == strategy.current_mask()


def test_an_optimizer_that_already_holds_the_coefficients_gets_no_second_group(tmp_path):
    model = classifier()
    strategy = uncapped(mask_interval=2, window=3, coef_lr=0.05)
    coefficients = strategy.attach(model)
    optimizer = torch.optim.AdamW(
        [{"params": model.parameters(), "weight_decay": 0.01}, strategy.param_group()], lr=1e-3
    )
    trainer = make_trainer(strategy, tmp_path, model=model, optimizers=(optimizer, None))
    trainer.train()
    assert strategy.coefficients is coefficients  # not attached a second time
    assert len(optimizer.param_groups) == 2
    held = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert len(held) == len(set(held))


def test_a_schedule_that_is_not_lambdalr_is_refused_in_one_line(tmp_path):
    model = classifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2)
    strategy = uncapped(mask_interval=2, window=3)
    trainer = make_trainer(strategy, tmp_path, model=model, optimizers=(optimizer, scheduler))
    with pytest.raises(ConfigError, match="StepLR") as raised:
        trainer.train()
    assert "\n" not in str(raised.value)
    assert "param_group()" in str(raised.value)  # says how to fix it


def test_after_the_search_the_model_prunes_to_a_plain_slim_model(tmp_path):
    strategy = uncapped(mask_interval=1, window=3, coef_lr=0.05, rewind=True)
    model = classifier()
    make_trainer(strategy, tmp_path, model=model, max_steps=6).train()
    assert strategy.search_done
    plan = strategy.plan(model)
    strategy.detach()
    strategy.rewind(model)
    slim = compresskit.prune(model, plan)
    fresh = compresskit.prune(classifier(), plan)  # the same initial weights
    assert plan.heads_per_layer == [3] * LAYERS
    assert slim.state_dict().keys() == fresh.state_dict().keys()
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in slim.state_dict().items())


def seeded_search(tmp_path: Path) -> EarlyBirdStrategy:
    transformers.set_seed(0)
    strategy = uncapped(mask_interval=1, window=3, eps=0.1, coef_lr=0.05)
    make_trainer(strategy, tmp_path, max_steps=40).train()
    return strategy


def test_two_seeded_runs_draw_the_same_ticket_at_the_same_step(tmp_path):
    first, second = seeded_search(tmp_path / "first"), seeded_search(tmp_path / "second")
    assert first.ticket_drawn and second.ticket_drawn
    assert first.ticket_step == second.ticket_step
    assert first.ticket_step > 3  # the masks moved before they settled
    assert first.detector.to_dict() == second.detector.to_dict()
