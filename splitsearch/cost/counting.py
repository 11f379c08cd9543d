"""What a candidate costs: parameters, MACs, FLOPs and activation memory, counted on the meta device.

Counting builds the network on PyTorch's ``meta`` device (shapes only, no memory, no arithmetic)
and runs one forward pass of one image while two counters watch it:

* :class:`torch.utils.flop_counter.FlopCounterMode` counts FLOPs of convolutions and matrix
  products the way PyTorch defines them (one multiply-add = 2 FLOPs).  MACs = FLOPs / 2.  The
  divide-and-co-train paper's "GFLOPs" are MACs.  Its authors counted with ``thop``, which adds
  batch norm, average pooling and conv biases; ``convention="paper"`` counts with thop's
  per-module rules instead (:mod:`splitsearch.cost.paper_macs`), so their Table 2 can be compared
  row by row.
* :class:`_PeakActivationMode` follows every tensor the forward creates and records the peak of
  the bytes alive at once: the activation memory an inference of one image needs (float32),
  parameters and the input excluded.  ``activation_bytes`` counts split blocks in their grouped
  form, all K branches at once; ``sequential_activation_bytes`` counts them run branch by branch
  (:mod:`splitsearch.split.sequential`), as the block-wise split paper deploys them to save memory.  The two
  agree for a network without split blocks, which is counted once.

The S networks of a candidate share one architecture, so one is counted and the candidate's
totals are S times that.  :func:`splitsearch.cost.fitting.fit_width` then finds the largest
``width_mult`` under a budget.
"""

from __future__ import annotations

import weakref
from contextlib import ExitStack, contextmanager
from typing import Any, Iterator, Literal

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from splitsearch.build import build_one
from splitsearch.config import SplitConfig
from splitsearch.cost.figures import CandidateCost, NetworkCost
from splitsearch.cost.paper_macs import PaperMacs
from splitsearch.split.sequential import (
    BranchSplitError,
    branch_sequential,
    is_split_block,
)


class _PeakActivationMode(TorchDispatchMode):
    """Tracks the bytes of tensors produced by operators that are alive at once, and their peak.

    Views and in-place results share their base's storage and are counted once; a storage is
    released when the last tensor using it is garbage collected.  Storages passed in ``exclude``
    (parameters, buffers, the input) are never counted.
    """

    def __init__(self, exclude: list[torch.Tensor]) -> None:
        super().__init__()
        self._excluded = {_storage_key(tensor) for tensor in exclude}
        self._users: dict[int, int] = {}
        self._bytes: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        for tensor in _tensors(out):
            self._track(tensor)
        return out

    def _track(self, tensor: torch.Tensor) -> None:
        key = _storage_key(tensor)
        if key in self._excluded:
            return
        if key not in self._users:
            self._users[key] = 0
            self._bytes[key] = tensor.untyped_storage().nbytes()
            self.current += self._bytes[key]
            self.peak = max(self.peak, self.current)
        self._users[key] += 1
        weakref.finalize(tensor, self._release, key)

    def _release(self, key: int) -> None:
        self._users[key] -= 1
        if self._users[key] == 0:
            self.current -= self._bytes.pop(key)
            del self._users[key]


class _SkipMetaInit(TorchDispatchMode):
    """Skips in-place operators (weight initialisation) on meta tensors while a network is built.

    A meta tensor has no values, so ``uniform_`` and friends change nothing; yet their meta
    kernels are Python decompositions, and they made up most of the time of building a network.
    """

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        if func.overloadpacket.__name__.endswith("_") and args and getattr(args[0], "is_meta", False):
            return args[0]
        return func(*args, **(kwargs or {}))


def _tensors(out: Any) -> list[torch.Tensor]:
    """The tensors an operator returned: one, or several in (nested) tuples and lists."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [tensor for item in out for tensor in _tensors(item)]
    return []


def _storage_key(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage()._cdata


MacsConvention = Literal["pytorch", "paper"]
MACS_CONVENTIONS = ("pytorch", "paper")


@contextmanager
def _shape_only_batch_norm(network: nn.Module) -> Iterator[None]:
    """On the meta device, let every batch norm module return an empty tensor shaped like its input.

    Inference batch norm's output is shaped like its input, but PyTorch's meta kernel for it
    is a Python decomposition that took most of a ResNet's counting time.  Replacing the
    modules' ``forward`` (not an ATen operator, whose name changes between releases) keeps
    module hooks firing and the output allocation visible to the activation tracker.
    """
    patched = [module for module in network.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    for module in patched:
        module.forward = torch.empty_like
    try:
        yield
    finally:
        for module in patched:
            del module.forward


def count_module(network: nn.Module, input_shape: tuple[int, ...], convention: MacsConvention = "pytorch"
                 ) -> NetworkCost:
    """Count one network (best built on the meta device) for one input of ``input_shape`` (C, H, W).

    ``convention``: ``pytorch`` counts convolutions and matrix products only (PyTorch's
    FlopCounterMode); ``paper`` counts every leaf module by the authors' thop rules
    (:mod:`splitsearch.cost.paper_macs`), which adds batch norm, average pooling and conv biases.
    A network with split blocks is run a second time, branch by branch, for
    ``sequential_activation_bytes``; its parameters and MACs are those of the grouped form.

    Raises:
        UncountedModuleError: ``paper`` convention and a leaf module without a rule.
    """
    if convention not in MACS_CONVENTIONS:
        raise ValueError(f"unknown MACs convention {convention!r}: use {' or '.join(MACS_CONVENTIONS)}")
    device = next(network.parameters()).device
    training = network.training
    network.eval()
    params = sum(parameter.numel() for parameter in network.parameters())
    image = torch.empty((1, *input_shape), device=device)
    with ExitStack() as stack:
        memory = _enter_counted_inference(stack, network, image)
        if convention == "paper":
            counter = stack.enter_context(PaperMacs().counting(network))
        else:
            counter = stack.enter_context(FlopCounterMode(display=False))
        network(image)
    sequential_bytes = _branch_sequential_peak(network, image, memory.peak)
    network.train(training)
    macs = counter.total if convention == "paper" else counter.get_total_flops() // 2
    return NetworkCost(params=params, macs=macs, activation_bytes=memory.peak,
                       sequential_activation_bytes=sequential_bytes)


def _enter_counted_inference(stack: ExitStack, network: nn.Module, image: torch.Tensor) -> _PeakActivationMode:
    """Enter what one counted forward of ``network`` on ``image`` needs; return the memory tracker.

    No autograd; shape-only batch norm on the meta device; the tracker ignores the network's own
    tensors and the input.
    """
    stack.enter_context(torch.no_grad())
    if image.is_meta:
        stack.enter_context(_shape_only_batch_norm(network))
    return stack.enter_context(_PeakActivationMode([*network.parameters(), *network.buffers(), image]))


def _branch_sequential_peak(network: nn.Module, image: torch.Tensor, grouped_peak: int) -> int | None:
    """Peak activation bytes of ``network`` (in evaluation mode) with its split blocks run branch by branch.

    A network without split blocks runs the same either way: ``grouped_peak``, without a second
    pass.  ``None`` where a split block cannot run branch by branch.
    """
    if not any(is_split_block(module) for module in network.modules()):
        return grouped_peak
    try:
        sequential = branch_sequential(network)
    except BranchSplitError:
        return None
    with ExitStack() as stack:
        memory = _enter_counted_inference(stack, sequential, image)
        sequential(image)
    return memory.peak


def count_config(config: SplitConfig, convention: MacsConvention = "pytorch") -> CandidateCost:
    """Cost of the candidate ``config``: one network counted on the meta device, times S."""
    with torch.device("meta"), _SkipMetaInit():
        network = build_one(config)
    one = count_module(network, config.input_info().input_shape, convention)
    return CandidateCost(networks=(one,) * config.S)
