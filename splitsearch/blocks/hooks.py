"""What a network tells the whole-network transformations about its parts: the hooks models implement.

The transformations of :mod:`splitsearch.split` work on any network whose parts answer these
questions, the way timm's models expose ``get_classifier()``: they never test for a model class
or spell out a module path, so a new family takes a transformation by implementing its hooks
(and saying so in the family registry, :mod:`splitsearch.models.registry`).

* :class:`SemanticNetwork` and :class:`SemanticBlock`: the stages and residual blocks the
  semantic split (:mod:`splitsearch.split.semantic`) cuts into groups, and the classifier it
  turns into G heads.
* :class:`LayeredNetwork`: the network's forward as one sequence of its modules, so the cut
  semantic split can be run as its shared lower layers and G separate branches
  (:mod:`splitsearch.split.semantic_branches`).
* :class:`BranchwiseModule`: a module with a forward of its own that keeps a split block's
  branches apart, so :func:`splitsearch.split.sequential.branch_sequential` may run it one
  branch at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

from torch import nn


@dataclass(frozen=True)
class ConvNorm:
    """A convolution and the batch norm after it: the semantic cut permutes both the same way."""

    conv: nn.Conv2d
    norm: nn.BatchNorm2d


@dataclass(frozen=True)
class ResidualLayers:
    """The layers of a residual block that the semantic cut regroups.

    ``middle`` reads the block input and writes the block's own middle channels; ``output`` writes
    the stage's channels, to which the block adds its shortcut; ``projection`` is the shortcut's
    convolution, None where the shortcut adds the input unchanged.
    """

    middle: ConvNorm
    output: ConvNorm
    projection: ConvNorm | None


@runtime_checkable
class SemanticBlock(Protocol):
    """A residual block the semantic split can cut (a block without this hook stops the cut of its stage)."""

    def semantic_layers(self) -> ResidualLayers:
        """Its layers, as the cut regroups them."""
        ...


@runtime_checkable
class SemanticNetwork(Protocol):
    """A network the semantic split can cut: a stem, stages of residual blocks, a linear classifier."""

    def semantic_stages(self) -> Sequence[Sequence[nn.Module]]:
        """The modules of each stage after the stem, bottom-up; the top stages are the ones cut."""
        ...

    def get_classifier(self) -> nn.Linear:
        """The linear layer that writes the logits; the cut makes it G heads."""
        ...


@runtime_checkable
class LayeredNetwork(Protocol):
    """A network whose forward is its modules run one after another (a stem, stages, a head)."""

    def layer_sequence(self) -> nn.Sequential:
        """Its own modules (shared, not copied), in the order the forward runs them.

        Running the sequence is the forward, so a transformation can cut it in two: the layers
        below a point, computed once, and the layers above it.
        """
        ...


@runtime_checkable
class BranchwiseModule(Protocol):
    """A module whose own forward keeps a split block's branches apart.

    Once its convolutions and batch norms are cut to one branch's channels, its forward computes
    that branch alone.  Branch-by-branch execution refuses a module with a forward of its own
    and without this hook: nothing says that forward does not mix the branches.
    """

    def input_passthroughs(self) -> tuple[nn.Module, ...]:
        """Children that hand this module's input on unchanged (an identity shortcut).

        As the first module of a split block such a child sees the whole block input, so in a
        branch it must keep only that branch's channels.
        """
        ...
