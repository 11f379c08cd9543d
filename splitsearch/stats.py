"""How much an accuracy measured on a few hundred images can be trusted.

Accuracy on n images is a binomial proportion: its standard error is sqrt(p (1 - p) / n), about
2.2 points for p = 0.5 on the 508 validation images of the CIFAR-10 subset.  The maximum over
many trials is biased upwards by that noise, which is why a pick is confirmed over seeds
(:mod:`splitsearch.search.confirm`) before it is called better.
"""

from __future__ import annotations

import math
import statistics
from typing import Sequence


def accuracy_standard_error(accuracy: float | None, count: int) -> float | None:
    """Binomial standard error of an accuracy measured on ``count`` images (None when unknown)."""
    if accuracy is None or count <= 0 or math.isnan(accuracy):
        return None
    return math.sqrt(accuracy * (1 - accuracy) / count)


def mean_and_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    if not values:
        raise ValueError("mean_and_sd needs at least one value")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None
