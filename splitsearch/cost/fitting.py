"""Fitting a candidate's width to a budget of parameters, MACs or activation memory.

Every channel count is a non-decreasing function of ``width_mult``, so a candidate's cost is
monotone in it and a bisection finds the widest network under the budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from splitsearch.config import SplitConfig
from splitsearch.cost.counting import MacsConvention, count_config
from splitsearch.cost.figures import CandidateCost
from splitsearch.errors import SplitsearchError


@dataclass(frozen=True)
class FitResult:
    """The widest config under the budget, its cost, and the next wider network's cost.

    ``step`` is how much more the next larger width costs (relative, in the budgeted quantity
    that it breaks): the finest resolution the width knob offers at this size.
    """

    config: SplitConfig
    cost: CandidateCost
    next_cost: CandidateCost | None
    budget_params: int | None
    budget_macs: int | None
    budget_activation: int | None = None

    @property
    def step(self) -> float | None:
        if self.next_cost is None:
            return None
        ratios = []
        if self.budget_params is not None and self.next_cost.params > self.budget_params:
            ratios.append(self.next_cost.params / self.cost.params - 1)
        if self.budget_macs is not None and self.next_cost.macs > self.budget_macs:
            ratios.append(self.next_cost.macs / self.cost.macs - 1)
        activation, next_activation = self.cost.deployed_activation_bytes, self.next_cost.deployed_activation_bytes
        if self.budget_activation is not None and next_activation > self.budget_activation:
            ratios.append(next_activation / activation - 1)
        return max(ratios)

    @property
    def usage(self) -> float:
        """Fraction of the tightest budget the fitted config uses (<= 1)."""
        fractions = []
        if self.budget_params is not None:
            fractions.append(self.cost.params / self.budget_params)
        if self.budget_macs is not None:
            fractions.append(self.cost.macs / self.budget_macs)
        if self.budget_activation is not None:
            fractions.append(self.cost.deployed_activation_bytes / self.budget_activation)
        return max(fractions)


class BudgetError(SplitsearchError, ValueError):
    """No width of the config fits the budget (or the budget is malformed)."""


MIN_WIDTH_MULT = 1 / 64
MAX_WIDTH_MULT = 64.0


def within_budget(cost: CandidateCost, budget_params: int | None, budget_macs: int | None,
                  budget_activation: int | None = None) -> bool:
    return ((budget_params is None or cost.params <= budget_params)
            and (budget_macs is None or cost.macs <= budget_macs)
            and (budget_activation is None or cost.deployed_activation_bytes <= budget_activation))


def fit_width(
    config: SplitConfig,
    budget_params: int | None = None,
    budget_macs: int | None = None,
    convention: MacsConvention = "pytorch",
    tolerance: float = 1e-3,
    budget_activation: int | None = None,
) -> FitResult:
    """Largest ``width_mult`` whose candidate stays within the budget(s).

    Every channel count is a non-decreasing function of ``width_mult`` (see
    :func:`splitsearch.models.layers.scale_channels`), so the cost is monotone and a bisection on
    ``log(width_mult)`` finds the boundary; it stops when the bracket is narrower than
    ``tolerance`` (relative), so the upper end is the next wider network in practice.
    ``convention`` says how MACs are counted (see :func:`count_module`).

    Raises:
        BudgetError: no budget given, or even the narrowest network exceeds it.
    """
    if budget_params is None and budget_macs is None and budget_activation is None:
        raise BudgetError("give a parameter, MACs or activation-memory budget")
    budgets = (budget_params, budget_macs, budget_activation)

    def cost_at(width_mult: float) -> CandidateCost:
        return count_config(config.replace(width_mult=width_mult), convention)

    low, high = config.width_mult, config.width_mult
    low_cost = cost_at(low)
    high_cost: CandidateCost | None = low_cost
    # Bracket the boundary: low fits, high does not.
    while not within_budget(low_cost, *budgets):
        high, high_cost = low, low_cost
        if low <= MIN_WIDTH_MULT:
            raise BudgetError(
                f"budget too small for {config.arch} with S={config.S}: even width_mult={low:.4g} costs "
                f"{low_cost.params:,} params, {low_cost.macs:,} MACs and "
                f"{low_cost.deployed_activation_bytes:,} bytes of activations"
            )
        low = max(low / 2, MIN_WIDTH_MULT)
        low_cost = cost_at(low)
    while high_cost is not None and within_budget(high_cost, *budgets):
        low, low_cost = high, high_cost
        if high >= MAX_WIDTH_MULT:
            high_cost = None  # the budget allows more than the widest network we build
            break
        high = min(high * 2, MAX_WIDTH_MULT)
        high_cost = cost_at(high)
    while high_cost is not None and high / low > 1 + tolerance:
        middle = math.sqrt(low * high)
        middle_cost = cost_at(middle)
        if within_budget(middle_cost, *budgets):
            low, low_cost = middle, middle_cost
        else:
            high, high_cost = middle, middle_cost
    # A short number in the YAML; rounding down keeps the config inside the budget.
    fitted = config.replace(width_mult=math.floor(low * 1e6) / 1e6)
    return FitResult(fitted, count_config(fitted, convention), high_cost, *budgets)
