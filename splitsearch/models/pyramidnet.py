"""PyramidNet with ShakeDrop for CIFAR (Han et al.; Yamada et al.) as the divide-and-co-train authors use it.

Bottleneck PyramidNet: a 3x3 stem of 16 channels with BN, then 3 stages of (depth - 2) / 9
pre-activation bottlenecks (BN-1x1-BN-ReLU-3x3-BN-ReLU-1x1-BN, then ShakeDrop).  The bottleneck
width grows by alpha / (number of blocks) at every block, rounded to whole channels; a block's
output is 4x its bottleneck width.  Shortcuts carry no parameters: 2x2 average pooling where
the stage down-samples, and zero channels appended where the width grows.  Final BN-ReLU, pooling
and classifier.

Divided by S, alpha and the final ShakeDrop probability are divided by sqrt(S); the stem width 16
is kept.  ``width_mult`` scales the stem width and alpha together, i.e. every bottleneck width.

Block-wise splitting is not offered: bottleneck widths change at every block and rarely divide
by a split factor, and the zero-padded shortcut has no convolution a fusion could stand in for.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from splitsearch.blocks.divide import drop_rate, pyramidnet_alpha
from splitsearch.models.layers import Classifier, conv1x1, conv3x3, init_weights, scale_channels
from splitsearch.models.registry import ArchitectureError, BuildArgs

_STEM_CHANNELS = 16
_EXPANSION = 4
_FINAL_SHAKEDROP = 0.5
# (depth -> alpha) of the authors' two CIFAR PyramidNets.
_ALPHA = {164: 270, 272: 200}


class _ShakeDropFunction(torch.autograd.Function):
    """Scale each sample by ``gate + (1 - gate) * alpha`` forwards and ``gate + (1 - gate) * beta`` backwards.

    ``beta ~ U(0, 1)`` is drawn anew in the backward pass: ShakeDrop's point is that the forward
    and backward perturbations differ.  Random tensors are made on the input's device, so the
    function also runs on the meta device where costs are counted.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, gate: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(gate)
        return x * (gate + (1 - gate) * alpha)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (gate,) = ctx.saved_tensors
        beta = torch.rand_like(gate)
        return grad * (gate + (1 - gate) * beta), None, None


class ShakeDrop(nn.Module):
    """ShakeDrop on a residual branch, drawn per sample.

    In training each sample's branch is kept as is with probability ``1 - p`` (gate 1); otherwise
    it is scaled by ``alpha ~ U(-1, 1)`` forwards and ``beta ~ U(0, 1)`` backwards.  In evaluation
    the branch is scaled by its expected forward factor, ``1 - p``.  (The authors draw one gate per
    batch; per sample is the ShakeDrop paper's better-performing variant.)
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x * (1 - self.p)
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        gate = (torch.rand(shape, device=x.device) >= self.p).to(x.dtype)
        alpha = torch.empty(shape, device=x.device, dtype=x.dtype).uniform_(-1, 1)
        return _ShakeDropFunction.apply(x, gate, alpha)

    def extra_repr(self) -> str:
        return f"p={self.p:.4f}"


class PyramidBottleneck(nn.Module):
    """Pre-activation bottleneck of width ``width`` with ShakeDrop and a parameter-free shortcut."""

    def __init__(self, in_channels: int, width: int, stride: int, shakedrop_p: float) -> None:
        super().__init__()
        out_channels = _EXPANSION * width
        self.branch = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            conv1x1(in_channels, width), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            conv3x3(width, width, stride), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            conv1x1(width, out_channels), nn.BatchNorm2d(out_channels),
            ShakeDrop(shakedrop_p),
        )
        self.pool = nn.AvgPool2d(2, stride, ceil_mode=True) if stride > 1 else nn.Identity()
        self.extra_channels = out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = F.pad(self.pool(x), (0, 0, 0, 0, 0, self.extra_channels))
        return self.branch(x) + shortcut


class CifarPyramidNet(nn.Module):
    """Stem, three stages of pyramidal bottlenecks (widths ``widths[i]``), final BN-ReLU, classifier."""

    def __init__(self, stem_channels: int, widths: list[int], shakedrop_ps: list[float], args: BuildArgs) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv3x3(args.in_channels, stem_channels), nn.BatchNorm2d(stem_channels))
        per_stage = len(widths) // 3
        stages = []
        in_channels = stem_channels
        for stage in range(3):
            blocks = []
            for index in range(stage * per_stage, (stage + 1) * per_stage):
                stride = 2 if stage > 0 and index == stage * per_stage else 1
                blocks.append(PyramidBottleneck(in_channels, widths[index], stride, shakedrop_ps[index]))
                in_channels = _EXPANSION * widths[index]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages, nn.BatchNorm2d(in_channels), nn.ReLU(inplace=True))
        self.classifier = Classifier(in_channels, args.num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.stages(self.stem(x)))


def pyramidnet(args: BuildArgs, depth: int) -> nn.Module:
    """``pyramidnet164`` (alpha 270) or ``pyramidnet272`` (alpha 200): bottleneck PyramidNet with ShakeDrop.

    Block i (0-based, over all stages) has bottleneck width round(16 + (i + 1) * alpha / blocks)
    and ShakeDrop probability p * (i + 1) / blocks (linear in depth, as Yamada et al.).
    """
    if depth not in _ALPHA:
        raise ArchitectureError(f"pyramidnet{depth}: only depths {sorted(_ALPHA)} are defined (the authors' models)")
    num_blocks = 3 * ((depth - 2) // 9)
    step = pyramidnet_alpha(_ALPHA[depth], args.S) / num_blocks
    final_p = drop_rate(_FINAL_SHAKEDROP, args.S)
    widths = [scale_channels(_STEM_CHANNELS + (i + 1) * step, args.width_mult) for i in range(num_blocks)]
    shakedrop_ps = [final_p * (i + 1) / num_blocks for i in range(num_blocks)]
    return CifarPyramidNet(scale_channels(_STEM_CHANNELS, args.width_mult), widths, shakedrop_ps, args)
