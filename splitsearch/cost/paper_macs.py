"""MACs as the divide-and-co-train authors counted them: thop's rules, one per module type.

The paper's Table 2 "GFLOPs" come from the authors' copy of ``thop``.  thop puts a forward hook
on every leaf module and adds a formula of that module's input and output shapes; operations a
``forward`` performs outside a leaf module (``torch.sigmoid``, a residual ``+``) are not
counted.  This module does the same with ``nn.Module`` forward hooks, so the figures depend only
on which modules a network calls, never on how a torch release lowers those modules to ATen ops
(an earlier ATen-level version silently lost batch norm on torch 2.14).

The rules, in multiply-accumulates per forward pass (thop calls them "ops"):

===========================  =================================================================
convolution                  output elements x (in_channels / groups x kernel taps + 1 if bias)
linear                       output elements x in_features
batch norm (evaluation)      2 x input elements
average pooling              output elements
adaptive average pooling     output elements x (input cells per output cell + 1)
ReLU, max pooling, dropout,  0
identity, flatten, padding
sigmoid, SiLU, ShakeDrop,    0 (thop has no rule for them and counts nothing)
stochastic depth
===========================  =================================================================

A leaf module of any other type raises :class:`UncountedModuleError`: silently counting it as
zero is how a counter drifts from the figures it claims to reproduce.
"""

from __future__ import annotations

import math
from collections import Counter
from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import Tensor, nn
from torchvision.ops import StochasticDepth

from splitsearch.errors import SplitsearchError
from splitsearch.models.pyramidnet import ShakeDrop

# A rule maps (module, its input, its output) to MACs by kind of work.
Rule = Callable[[nn.Module, Tensor, Tensor], dict[str, int]]


class UncountedModuleError(SplitsearchError, ValueError):
    """A network holds a leaf module for which no paper-convention rule exists."""


def _convolution(module: nn.modules.conv._ConvNd, x: Tensor, y: Tensor) -> dict[str, int]:
    taps = math.prod(module.kernel_size)
    return {"convolution": y.numel() * (module.in_channels // module.groups) * taps,
            "bias": y.numel() if module.bias is not None else 0}


def _linear(module: nn.Linear, x: Tensor, y: Tensor) -> dict[str, int]:
    return {"linear": y.numel() * module.in_features}


def _batch_norm(module: nn.Module, x: Tensor, y: Tensor) -> dict[str, int]:
    # Subtract the mean and divide by the std, then scale and shift: thop counts 2 per element.
    return {"batch_norm": 2 * x.numel()}


def _average_pool(module: nn.Module, x: Tensor, y: Tensor) -> dict[str, int]:
    return {"pooling": y.numel()}


def _adaptive_average_pool(module: nn.Module, x: Tensor, y: Tensor) -> dict[str, int]:
    cells_per_output = math.prod(x.shape[2:]) // math.prod(y.shape[2:])
    return {"pooling": y.numel() * (cells_per_output + 1)}


def _free(module: nn.Module, x: Tensor, y: Tensor) -> dict[str, int]:
    return {}


_RULES: dict[type, Rule] = {
    nn.modules.conv._ConvNd: _convolution,
    nn.Linear: _linear,
    nn.modules.batchnorm._BatchNorm: _batch_norm,
    nn.AvgPool1d: _average_pool,
    nn.AvgPool2d: _average_pool,
    nn.AvgPool3d: _average_pool,
    nn.AdaptiveAvgPool1d: _adaptive_average_pool,
    nn.AdaptiveAvgPool2d: _adaptive_average_pool,
    nn.AdaptiveAvgPool3d: _adaptive_average_pool,
}
_FREE = (
    nn.ReLU, nn.ReLU6, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d, nn.Dropout, nn.Dropout2d, nn.Identity, nn.Flatten, nn.ZeroPad2d,
    # thop has no rule for these and counts nothing.
    nn.Sigmoid, nn.SiLU, ShakeDrop, StochasticDepth,
)


def rule_for(module: nn.Module) -> Rule | None:
    """The rule that counts ``module`` (a leaf module), or ``None`` if there is none."""
    if isinstance(module, _FREE):
        return _free
    for kind, rule in _RULES.items():
        if isinstance(module, kind):
            return rule
    return None


def _leaves(network: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    for name, module in network.named_modules():
        if next(module.children(), None) is None:
            yield name, module


class PaperMacs:
    """Counts the MACs of the forward passes run while it is active (see the module docstring).

    ``by_kind`` splits the total into convolution, linear, bias (of convolutions), batch_norm and
    pooling; convolution + linear is what PyTorch's FlopCounterMode counts (as MACs), the rest
    is where the paper convention differs from it.
    """

    def __init__(self) -> None:
        self.by_kind: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.by_kind.values())

    @contextmanager
    def counting(self, network: nn.Module) -> Iterator[PaperMacs]:
        """Hook every leaf module of ``network`` for the duration of the block.

        Raises:
            UncountedModuleError: a leaf module has no rule; the message names it and its type.
        """
        hooks = []
        try:
            for name, module in _leaves(network):
                rule = rule_for(module)
                if rule is None:
                    raise UncountedModuleError(
                        f"no paper-convention MACs rule for {name or 'the network'} ({type(module).__name__}); "
                        "add one to splitsearch/cost/paper_macs.py"
                    )
                hooks.append(module.register_forward_hook(self._hook(rule)))
            yield self
        finally:
            for hook in hooks:
                hook.remove()

    def _hook(self, rule: Rule) -> Callable:
        def count(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
            self.by_kind.update(rule(module, inputs[0], output))

        return count


def paper_macs(network: nn.Module, input_shape: tuple[int, ...]) -> PaperMacs:
    """MACs of one forward pass of one ``input_shape`` (C, H, W) image, by the paper's rules.

    Runs in evaluation mode without gradients, on the network's own device (``meta`` costs
    nothing); the network's train/eval mode is restored.
    """
    device = next(network.parameters()).device
    counter = PaperMacs()
    training = network.training
    network.eval()
    try:
        with torch.no_grad(), counter.counting(network):
            network(torch.empty((1, *input_shape), device=device))
    finally:
        network.train(training)
    return counter
