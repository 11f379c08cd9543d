"""Published cost figures the zoo is checked against (Zhao et al., "Towards Better Accuracy-efficiency
Trade-offs: Divide and Co-training", Tables 2 and 4).

Each row: architecture, S, parameters and MACs of all S networks together for one image, and
the crop it was counted at (Table 2: one 32x32 CIFAR-100 image, no crop; Table 4: one ImageNet
image at the crop given).  The paper's "GFLOPs" column is multiply-accumulates, i.e. MACs, counted with
thop, which also counts batch norm and average pooling: compare with
``count_config(config, convention="paper")``.
"""

from __future__ import annotations

from typing import NamedTuple


class ReferenceCost(NamedTuple):
    arch: str
    S: int
    params: float
    macs: float
    crop: int | None = None


TABLE2_CIFAR100 = [
    ReferenceCost("wrn16_8", 1, 11.0e6, 1.55e9),
    ReferenceCost("wrn16_8", 2, 12.4e6, 1.75e9),
    ReferenceCost("wrn16_8", 4, 11.1e6, 1.58e9),
    ReferenceCost("wrn28_10", 1, 36.5e6, 5.25e9),
    ReferenceCost("wrn28_10", 2, 35.8e6, 5.16e9),
    ReferenceCost("wrn28_10", 4, 36.7e6, 5.28e9),
    ReferenceCost("wrn40_10", 1, 55.9e6, 8.08e9),
    ReferenceCost("wrn40_10", 2, 54.8e6, 7.94e9),
    ReferenceCost("wrn40_10", 4, 56.0e6, 8.12e9),
    ReferenceCost("resnet110", 1, 1.17e6, 0.17e9),
    ReferenceCost("resnet110", 2, 1.33e6, 0.20e9),
    ReferenceCost("resnet110", 4, 1.21e6, 0.18e9),
    ReferenceCost("resnet164", 1, 1.73e6, 0.25e9),
    ReferenceCost("resnet164", 2, 1.96e6, 0.29e9),
    ReferenceCost("resnet164", 4, 1.78e6, 0.26e9),
    ReferenceCost("se_resnet110", 1, 1.69e6, 0.17e9),
    ReferenceCost("se_resnet110", 2, 1.89e6, 0.20e9),
    ReferenceCost("se_resnet110", 4, 1.70e6, 0.18e9),
    ReferenceCost("se_resnet164", 1, 2.51e6, 0.26e9),
    ReferenceCost("se_resnet164", 2, 2.81e6, 0.29e9),
    ReferenceCost("se_resnet164", 4, 2.53e6, 0.27e9),
    ReferenceCost("resnext29_8x64d", 1, 34.5e6, 5.41e9),
    ReferenceCost("resnext29_8x64d", 2, 35.4e6, 5.50e9),
    ReferenceCost("resnext29_8x64d", 4, 36.9e6, 5.67e9),
    ReferenceCost("densenet_bc190", 1, 25.8e6, 9.39e9),
    ReferenceCost("densenet_bc190", 2, 25.5e6, 9.24e9),
    ReferenceCost("densenet_bc190", 4, 26.3e6, 9.48e9),
    ReferenceCost("pyramidnet272", 1, 26.8e6, 4.55e9),
    ReferenceCost("pyramidnet272", 2, 28.9e6, 5.24e9),
    ReferenceCost("pyramidnet272", 4, 32.8e6, 6.33e9),
]


# Zhao et al., Table 4 (ImageNet): all S networks together for one crop x crop image (224 unless
# given; the paper counts EfficientNet-B7 at 320 and SE-ResNeXt-101 64x4d at 416).  Only the
# rows whose divided network the paper also lists at S = 1 (or, for SE-ResNeXt, the S = 2 row).
TABLE4_IMAGENET = [
    ReferenceCost("wrn50_2", 1, 68.9e6, 12.8e9, 224),
    ReferenceCost("wrn50_2", 2, 51.4e6, 10.9e9, 224),
    ReferenceCost("wrn50_3", 1, 135.0e6, 23.8e9, 224),
    ReferenceCost("wrn50_3", 2, 138.0e6, 25.6e9, 224),
    ReferenceCost("resnext101_64x4d", 1, 83.6e6, 16.9e9, 224),
    ReferenceCost("resnext101_64x4d", 2, 88.6e6, 18.8e9, 224),
    ReferenceCost("efficientnet_b7", 1, 66.7e6, 10.6e9, 320),
    ReferenceCost("efficientnet_b7", 2, 68.2e6, 10.5e9, 320),
    ReferenceCost("se_resnext101_64x4d", 2, 98.0e6, 61.1e9, 416),
]
