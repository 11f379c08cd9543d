"""What a candidate costs, as plain figures: no torch, so the store and the search read them cheaply.

:mod:`.counting` measures them (on PyTorch's meta device), :mod:`.latency` times them; this
module only holds the numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class NetworkCost:
    """Cost of one small network for one input image.

    ``sequential_activation_bytes`` is the peak with split blocks run branch by branch; ``None``
    where a split block holds a module that cannot run so (see :class:`BranchSplitError`).
    """

    params: int
    macs: int
    activation_bytes: int
    sequential_activation_bytes: int | None

    @property
    def flops(self) -> int:
        return 2 * self.macs

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "flops": self.flops}


@dataclass(frozen=True)
class CandidateCost:
    """Cost of a candidate: all S networks together, and each one.

    ``activation_bytes`` of the whole is the sum over networks: the S networks run concurrently.
    """

    networks: tuple[NetworkCost, ...]

    @property
    def params(self) -> int:
        return sum(network.params for network in self.networks)

    @property
    def macs(self) -> int:
        return sum(network.macs for network in self.networks)

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def activation_bytes(self) -> int:
        return sum(network.activation_bytes for network in self.networks)

    @property
    def sequential_activation_bytes(self) -> int | None:
        """The sum with split blocks run branch by branch; ``None`` if a network cannot run so."""
        parts = [network.sequential_activation_bytes for network in self.networks]
        return None if None in parts else sum(parts)

    @property
    def deployed_activation_bytes(self) -> int:
        """The activation memory budgets and objectives hold a candidate to: its split blocks run
        branch by branch, as the block-wise split paper deploys them, where they can; else all branches at once."""
        sequential = self.sequential_activation_bytes
        return self.activation_bytes if sequential is None else sequential

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` form: totals plus a ``networks`` list."""
        return {
            "params": self.params,
            "macs": self.macs,
            "flops": self.flops,
            "activation_bytes": self.activation_bytes,
            "sequential_activation_bytes": self.sequential_activation_bytes,
            "networks": [network.to_dict() for network in self.networks],
        }


@dataclass(frozen=True)
class Latency:
    """A candidate's measured forward latency.

    Attributes:
        seconds: the median time of one forward pass of ``batch_size`` images.
        iqr_seconds: the interquartile range of the measurements (their spread).
        batch_size: images per pass.
        runs: how many passes were timed (after the warm-up).
        execution: how the members ran, e.g. ``sequential on cpu`` or ``fused on cuda``.
    """

    seconds: float
    iqr_seconds: float
    batch_size: int
    runs: int
    execution: str

    @property
    def milliseconds(self) -> float:
        return self.seconds * 1000
