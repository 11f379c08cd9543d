"""Block-wise split factors (MalekHosseini et al. 2020): one K_b per block, and what it groups.

A block split by K becomes K slim parallel branches, written as grouped convolutions
(``groups=K``); :mod:`splitsearch.blocks.fusion` explains the whole form.  These two rules need
no torch: the config checks the factors before any network is built.
"""

from __future__ import annotations

from typing import Sequence


def check_block_factors(block_factors: Sequence[int], num_blocks: int, arch: str) -> tuple[int, ...]:
    """Return ``block_factors`` as a tuple, defaulting to all ones; raise a clear error if invalid."""
    if not block_factors:
        return (1,) * num_blocks
    factors = tuple(block_factors)
    if len(factors) != num_blocks:
        raise ValueError(
            f"{arch} has {num_blocks} blocks, so block_factors needs {num_blocks} entries, got {list(factors)}"
        )
    for factor in factors:
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
            raise ValueError(
                f"block_factors of {arch} must be {num_blocks} positive integers, got {list(factors)}"
            )
    return factors


def layer_groups(split_factor: int, first_in_block: bool) -> int:
    """``groups`` of a convolution inside a block split by ``split_factor``.

    The first convolution of the block reads the whole block input, so it stays dense.
    """
    return 1 if first_in_block else split_factor
