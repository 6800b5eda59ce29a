"""Where a run's training time went, and what it saved against dense training of the same
budget (report.json's `time`, and the CLI's last lines).

The search's steps run the dense model (plus what the strategy adds, a few percent at most:
benchmarks/coefficient_overhead.py), so dense training of the whole budget is estimated as
budget × the search's seconds per step, measured in the same run on the same machine. That
slightly overstates dense, by the strategy's overhead; benchmarks/time_to_quality.py measures
dense side by side instead.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class TimeAccount:
    """`budget_steps`: the optimizer steps of the whole schedule; `search_steps` and
    `slim_steps`: trained in each stage (a slim model that restarts trains the whole budget
    after the search); seconds per step are medians (StepClock); `training_seconds` is
    search + prune + slim training, wall-clock, without the evaluations `--eval-every` adds."""

    budget_steps: int
    search_steps: int
    slim_steps: int
    search_seconds_per_step: float | None
    slim_seconds_per_step: float | None
    training_seconds: float

    @property
    def search_fraction(self) -> float:
        return self.search_steps / max(self.budget_steps, 1)

    @property
    def dense_estimate_seconds(self) -> float | None:
        """Dense training of the budget at the search's pace (None without a search)."""
        if not self.search_steps or self.search_seconds_per_step is None:
            return None
        return self.budget_steps * self.search_seconds_per_step

    @property
    def estimated_saving(self) -> float | None:
        """1 − this run's training time / the dense estimate (negative: it cost more)."""
        dense = self.dense_estimate_seconds
        return None if not dense else 1 - self.training_seconds / dense

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {
            "search_fraction": round(self.search_fraction, 4),
            "dense_estimate_seconds": _rounded(self.dense_estimate_seconds),
            "estimated_saving": _rounded(self.estimated_saving),
        }

    def summary(self) -> list[str]:
        """Lines for the terminal; none for a run without a search."""
        saving, dense = self.estimated_saving, self.dense_estimate_seconds
        if saving is None or dense is None:
            return []
        pace = f"search {self.search_seconds_per_step:.3f} s/step"
        if self.slim_seconds_per_step is not None:
            pace += f", slim {self.slim_seconds_per_step:.3f} s/step"
        return [
            f"steps: search {self.search_steps} ({self.search_fraction:.0%} of the "
            f"{self.budget_steps}-step budget), slim {self.slim_steps}; {pace}",
            f"training time: {self.training_seconds:.1f}s, est. {abs(saving):.0%} "
            f"{'less' if saving >= 0 else 'more'} than dense training of the same budget "
            f"(~{dense:.1f}s at the search's pace)",
        ]


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
