"""The semantic split's settings and per-stage rules (SplitNet, Kim et al. 2017).

How many groups each stage gets for a split depth (``fc``: classifier only; ``shallow``: + last
stage; ``deep``: + last two stages; ``hierarchical``: G/2 supergroups in the second-to-last
stage, G subgroups above; the stem and the first stage are never split), what each stage's width
must be a multiple of so the groups come out equal, and how the assignments are parametrised.
No torch here: the config checks these settings and the models round their widths by them
before :mod:`splitsearch.split.semantic` plans and cuts a network.
"""

from __future__ import annotations

import math
from typing import Literal

SplitDepth = Literal["fc", "shallow", "deep", "hierarchical"]
SPLIT_DEPTHS: tuple[str, ...] = ("fc", "shallow", "deep", "hierarchical")
DEFAULT_SPLIT_DEPTH = "shallow"

# How the assignments of stage 1 are parametrised (:mod:`splitsearch.split.grouping`).
Parametrisation = Literal["softmax", "reduced_gradient"]
PARAMETRISATIONS = ("softmax", "reduced_gradient")

# How many of the top stages each depth splits (the classifier is always split).
_SPLIT_STAGES = {"fc": 0, "shallow": 1, "deep": 2, "hierarchical": 2}


def stage_groups(num_stages: int, groups: int, depth: str) -> tuple[int, ...]:
    """Groups per stage (1: not split); e.g. 3 stages, G=2, deep -> (1, 2, 2); G=4 hierarchical -> (1, 2, 4)."""
    check_split(groups, depth, num_stages)
    result = [1] * num_stages
    for offset in range(_SPLIT_STAGES[depth]):
        result[num_stages - 1 - offset] = groups
    if depth == "hierarchical":
        result[num_stages - 2] = groups // 2
    return tuple(result)


def channel_divisors(num_stages: int, groups: int, depth: str | None) -> tuple[int, ...]:
    """What each stage's width must be a multiple of, so every group gets the same number of channels.

    The last stage also feeds the classifier's G feature groups, so it is a multiple of G even
    where only the classifier is split (``fc``).
    """
    if groups == 1 or depth is None:
        return (1,) * num_stages
    divisors = list(stage_groups(num_stages, groups, depth))
    divisors[-1] = math.lcm(divisors[-1], groups)
    return tuple(divisors)


def check_split(groups: int, depth: str, num_stages: int) -> None:
    """Raise ValueError, saying what to change, if ``groups`` and ``depth`` do not fit together."""
    if depth not in _SPLIT_STAGES:
        raise ValueError(f"split_depth must be one of {', '.join(SPLIT_DEPTHS)}, got {depth!r}")
    if _SPLIT_STAGES[depth] >= num_stages:
        raise ValueError(f"split_depth {depth} would split the first stage, which stays shared; use a "
                         "shallower depth")
    if depth == "hierarchical" and (groups < 4 or groups % 2):
        raise ValueError(f"split_depth hierarchical needs an even number of groups >= 4 (G/2 supergroups, "
                         f"then G subgroups), got groups={groups}")
