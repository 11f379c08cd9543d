"""Run split blocks branch by branch, as the block-wise split paper deploys them, to count their memory.

:mod:`splitsearch.blocks.fusion` writes a block split by K as grouped convolutions: the K slim
branches run at once, side by side on the channel axis, so the feature maps alive inside the
block are as wide as in the unsplit block.  The memory saving of the block-wise split
(MalekHosseini et al. 2020) comes from running the branches one after another: only one branch's
maps (1/K of the width) are alive at a time.

:func:`branch_sequential` rewrites a network that way, with the same weights.  Branch k is a
copy of the block's modules restricted to the channels branch k owns; its output is pooled and
passed through the fusion's 1x1 convolution restricted to those input channels, and the results
are summed into one output tensor (the convolution is linear, so the sum over branches equals the
convolution of their concatenation); the fusion's BN and ReLU follow.  In evaluation mode the
copy computes the same function as the grouped network, and :mod:`splitsearch.cost` counts its
peak activation memory.  Which modules keep the branches apart, the models say through the
branch-by-branch hook (:class:`~splitsearch.blocks.hooks.BranchwiseModule`); this module names
no model class.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass

import torch
from torch import nn

from splitsearch.blocks.fusion import Fusion
from splitsearch.blocks.hooks import BranchwiseModule

# Parameter-free modules that act on every channel separately: kept as they are in a branch.
_CHANNELWISE_LEAVES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Dropout, nn.Identity,
)


class BranchSplitError(ValueError):
    """A module inside a split block cannot be restricted to one branch's channels."""


def is_split_block(module: nn.Module) -> bool:
    """Whether ``module`` is a split block: an ``nn.Sequential`` closed by a fusion of K > 1 branches."""
    return (
        isinstance(module, nn.Sequential)
        and len(module) > 0
        and isinstance(module[-1], Fusion)
        and module[-1].branches > 1
    )


@dataclass(frozen=True)
class _Branch:
    """Branch ``index`` of ``count``, in a block whose input has ``input_channels`` channels."""

    index: int
    count: int
    input_channels: int

    def channels(self, total: int, path: str) -> slice:
        """The channels this branch owns in a layer of ``total`` channels.

        The channel blocks of a grouped layer (``total`` a multiple of K); a near-even cut where a
        dense layer's width is not a multiple of K (ResNet18's split stem).
        """
        if total < self.count:
            raise BranchSplitError(f"{path}: {total} channels cannot be shared by {self.count} branches")
        return slice(self.index * total // self.count, (self.index + 1) * total // self.count)


class _ChannelSlice(nn.Module):
    """An identity shortcut that reads the whole block input, in a branch: keeps the branch's channels."""

    def __init__(self, channels: slice) -> None:
        super().__init__()
        self.start, self.stop = channels.start, channels.stop

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.start:self.stop]


def _placement(module: nn.Module) -> dict[str, torch.device | torch.dtype]:
    """Device and dtype of ``module``'s tensors, for building its sliced copy beside it (meta included)."""
    tensor = next(itertools.chain(module.parameters(), module.buffers()))
    return {"device": tensor.device, "dtype": tensor.dtype}


def _copy_rows(source: nn.Module, target: nn.Module, rows: slice) -> nn.Module:
    """Fill ``target``'s parameters and buffers with rows ``rows`` of ``source``'s (scalars whole)."""
    with torch.no_grad():
        for name, value in itertools.chain(target.named_parameters(recurse=False), target.named_buffers(recurse=False)):
            original = getattr(source, name)
            value.copy_(original if original.dim() == 0 else original[rows])
    return target


def _restrict_conv(conv: nn.Conv2d, branch: _Branch, path: str) -> nn.Conv2d:
    """The output channels of ``conv`` that ``branch`` owns.

    A grouped convolution (groups a multiple of K) keeps the branch's groups; a dense one that
    reads the block input (the block's first convolution, a projection shortcut) keeps its input
    and gives up the other branches' outputs.
    """
    if conv.groups % branch.count == 0:
        in_channels, groups = conv.in_channels // branch.count, conv.groups // branch.count
    elif conv.groups == 1 and conv.in_channels == branch.input_channels:
        in_channels, groups = conv.in_channels, 1
    else:
        raise BranchSplitError(
            f"{path} (Conv2d {conv.in_channels}->{conv.out_channels}, groups={conv.groups}) mixes the channels of "
            f"{branch.count} branches: it is neither grouped by the split factor nor a dense read of the block input"
        )
    rows = branch.channels(conv.out_channels, path)
    sliced = nn.Conv2d(
        in_channels, rows.stop - rows.start, conv.kernel_size, conv.stride, conv.padding, conv.dilation, groups,
        conv.bias is not None, conv.padding_mode, **_placement(conv),
    )
    return _copy_rows(conv, sliced, rows)


def _restrict_batch_norm(norm: nn.BatchNorm2d, branch: _Branch, path: str) -> nn.BatchNorm2d:
    rows = branch.channels(norm.num_features, path)
    sliced = nn.BatchNorm2d(
        rows.stop - rows.start, norm.eps, norm.momentum, norm.affine, norm.track_running_stats, **_placement(norm)
    )
    return _copy_rows(norm, sliced, rows)


def _restricted(module: nn.Module, branch: _Branch, path: str) -> nn.Module | None:
    """What stands in for ``module`` in ``branch``: a sliced convolution or BN, or ``None`` to copy it as it is.

    Raises:
        BranchSplitError: ``module`` is not known to keep the branches' channels apart.
    """
    if type(module) is nn.Conv2d:
        return _restrict_conv(module, branch, path)
    if type(module) is nn.BatchNorm2d:
        return _restrict_batch_norm(module, branch, path)
    runs_children_in_order = isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward
    if runs_children_in_order or isinstance(module, (*_CHANNELWISE_LEAVES, BranchwiseModule)):
        return None
    raise BranchSplitError(
        f"{path} ({type(module).__name__}) cannot run branch by branch: it is not known to keep the "
        "branches' channels apart"
    )


def _block_input_channels(body: nn.Sequential, path: str) -> int:
    """Channels of the block input: what the block's first convolution reads."""
    for module in body.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    raise BranchSplitError(f"{path}: a split block without a convolution before its fusion")


def _branch_body(body: nn.Sequential, branch: _Branch, path: str) -> nn.Sequential:
    """A copy of the block's modules before the fusion, restricted to ``branch``'s channels."""
    # Entered in deepcopy's memo, the sliced modules take the originals' places in the copy (a
    # module registered under two names, like ``last_bn``, stays one), and nothing is copied twice.
    replacements: dict[int, nn.Module] = {}
    names: dict[nn.Module, str] = {}
    for name, module in body.named_modules(prefix=path):
        names[module] = name
        restricted = _restricted(module, branch, name)
        if restricted is not None:
            replacements[id(module)] = restricted
    first = body[0]
    if isinstance(first, BranchwiseModule):
        # What the first module hands on unchanged (an identity shortcut) is the whole block input,
        # not the branch's maps.
        for passthrough in first.input_passthroughs():
            replacements[id(passthrough)] = _ChannelSlice(branch.channels(branch.input_channels, names[passthrough]))
    return copy.deepcopy(body, replacements)


def restrict_to_branch(body: nn.Sequential, index: int, count: int, name: str = "body") -> nn.Sequential:
    """A copy of ``body`` that computes branch ``index`` of ``count`` alone, with the same weights.

    ``body`` is split the way a split block is: every convolution grouped by ``count`` (or a dense
    read of the body's input), batch norms and channel-wise layers between them.  The cut
    semantic split's branches above its shared layers are built this way too.

    Raises:
        BranchSplitError: a module of ``body`` cannot be restricted to one branch.
    """
    return _branch_body(body, _Branch(index, count, _block_input_channels(body, name)), name)


def _fusion_parts(fusion: Fusion, path: str) -> tuple[list[nn.Module], nn.Conv2d, nn.Module, nn.Module]:
    """A fusion's pool layers (none or one), 1x1 convolution, BN and activation."""
    *pools, mixing, norm, activation = fusion
    if not isinstance(mixing, nn.Conv2d) or mixing.groups != 1 or not all(
        isinstance(pool, _CHANNELWISE_LEAVES) for pool in pools
    ):
        raise BranchSplitError(f"{path}: expected a fusion of [pool], 1x1 Conv2d, BN, ReLU, got {fusion}")
    return pools, mixing, norm, activation


def _restrict_mixing(mixing: nn.Conv2d, branch: _Branch, path: str) -> nn.Conv2d:
    """The fusion's 1x1 convolution reading only ``branch``'s channels (the bias counted in branch 0)."""
    columns = branch.channels(mixing.in_channels, path)
    sliced = nn.Conv2d(
        columns.stop - columns.start, mixing.out_channels, mixing.kernel_size, mixing.stride, mixing.padding,
        mixing.dilation, bias=mixing.bias is not None and branch.index == 0, **_placement(mixing),
    )
    with torch.no_grad():
        sliced.weight.copy_(mixing.weight[:, columns])
        if sliced.bias is not None:
            sliced.bias.copy_(mixing.bias)
    return sliced


class BranchSequentialBlock(nn.Module):
    """A split block that runs its K branches one after another and sums their fused outputs.

    Built from the block's modules before its fusion (``body``) and the fusion.  Branch k's
    intermediate maps are freed before branch k + 1 starts, so the live memory inside the block is
    about 1/K of the grouped form's; the fused output (one tensor, accumulated in place) is what
    stays alive across branches.

    Raises:
        BranchSplitError: a module inside the block cannot be restricted to one branch (a linear
            layer, a module with a forward not known to keep branches apart, a dense convolution
            that does not read the block input); the message names it by ``name``.
    """

    def __init__(self, body: nn.Sequential, fusion: Fusion, name: str = "block") -> None:
        super().__init__()
        pools, mixing, norm, activation = _fusion_parts(fusion, f"{name}.{len(body)}")
        input_channels = _block_input_channels(body, name)
        branches = [_Branch(index, fusion.branches, input_channels) for index in range(fusion.branches)]
        self.branches = nn.ModuleList(
            nn.Sequential(
                _branch_body(body, branch, name),
                *copy.deepcopy(pools),
                _restrict_mixing(mixing, branch, f"{name}.{len(body)}.{len(pools)}"),
            )
            for branch in branches
        )
        self.norm = copy.deepcopy(norm)
        self.activation = copy.deepcopy(activation)
        self.train(fusion.training)  # the sliced modules are new, in training mode until told otherwise

    @classmethod
    def from_split_block(cls, block: nn.Sequential, name: str = "block") -> BranchSequentialBlock:
        """From a split block as the models build it: its modules, then its fusion."""
        if not is_split_block(block):
            raise ValueError(f"{name} is not a split block (an nn.Sequential closed by a Fusion of K > 1 branches)")
        return cls(nn.Sequential(*block[:-1]), block[-1], name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = self.branches[0](x)
        for branch in self.branches[1:]:
            fused += branch(x)
        return self.activation(self.norm(fused))


def branch_sequential(network: nn.Module) -> nn.Module:
    """A copy of ``network`` whose split blocks run branch by branch (:class:`BranchSequentialBlock`).

    Same weights and, in evaluation mode, the same outputs; a network without split blocks comes
    back as a plain copy.  Works on the meta device: every sliced module is built where its
    original lives.

    Raises:
        BranchSplitError: a split block holds a module that cannot be restricted to one branch.
    """
    # Deep-copying with the rewritten blocks pre-entered in the memo puts them where the originals
    # were, wherever that is (the network itself included).
    replacements: dict[int, nn.Module] = {
        id(module): BranchSequentialBlock.from_split_block(module, name or "network")
        for name, module in network.named_modules()
        if is_split_block(module)
    }
    return copy.deepcopy(network, replacements)
