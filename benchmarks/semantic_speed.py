"""Is a semantically split network faster than the unsplit one in proportion to the MACs it dropped?

Run (about 3 minutes on 2 CPU cores with the defaults):
    python benchmarks/semantic_speed.py
    python benchmarks/semantic_speed.py --arch wrn16_8 --dataset cifar100 --batch 32 --rounds 7 --device cpu

Builds the unsplit network and its semantic splits (fc, shallow, deep with G=2; hierarchical
with G=4), as ``splitsearch train`` deploys them after the cut: the kept weights of every split
stage in ONE grouped convolution per layer, channels permuted so each group is contiguous, the
classifier as G heads.  It times a training step (forward + backward + SGD step) and an
inference forward of each, interleaved round by round so that load on the machine hits every
variant alike (the order rotates each round), and prints the median times, the ratio to the
unsplit network, and the ratio the MACs alone predict.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import resultfiles

VARIANTS = (("unsplit", 1, None), ("fc", 2, "fc"), ("shallow", 2, "shallow"), ("deep", 2, "deep"),
            ("hierarchical", 4, "hierarchical"))


def build(arch: str, dataset: str, groups: int, depth: str | None, device: torch.device) -> nn.Module:
    from splitsearch.build import build_one
    from splitsearch.config import SplitConfig

    torch.manual_seed(0)
    with torch.device(device):
        return build_one(SplitConfig(arch=arch, groups=groups, split_depth=depth, dataset=dataset))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_train_step(network: nn.Module, optimizer: torch.optim.Optimizer, images: torch.Tensor,
                    labels: torch.Tensor) -> float:
    synchronize(images.device)
    started = time.perf_counter()
    loss = nn.functional.cross_entropy(network(images), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    synchronize(images.device)
    return time.perf_counter() - started


@torch.no_grad()
def time_inference(network: nn.Module, images: torch.Tensor) -> float:
    synchronize(images.device)
    started = time.perf_counter()
    network(images)
    synchronize(images.device)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="wrn16_8")
    parser.add_argument("--dataset", default="cifar100")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from splitsearch.config import SplitConfig
    from splitsearch.cost.counting import count_config
    from splitsearch.data import dataset_info

    device = torch.device(args.device)
    info = dataset_info(args.dataset)
    images = torch.randn(args.batch, *info.input_shape, device=device)
    labels = torch.randint(0, info.num_classes, (args.batch,), device=device)
    networks, optimizers, costs = {}, {}, {}
    for name, groups, depth in VARIANTS:
        networks[name] = build(args.arch, args.dataset, groups, depth, device).train()
        optimizers[name] = torch.optim.SGD(networks[name].parameters(), lr=0.01, momentum=0.9)
        costs[name] = count_config(SplitConfig(arch=args.arch, groups=groups, split_depth=depth, dataset=args.dataset))
    train_times = {name: [] for name in networks}
    infer_times = {name: [] for name in networks}
    names = list(networks)
    for round_index in range(args.rounds + 1):  # round 0 warms up (allocator, kernels) and is dropped
        order = names[round_index % len(names):] + names[:round_index % len(names)]  # no variant always first
        for name in order:
            network = networks[name]
            network.train()
            step = time_train_step(network, optimizers[name], images, labels)
            network.eval()
            forward = time_inference(network, images)
            if round_index:
                train_times[name].append(step)
                infer_times[name].append(forward)

    threads = torch.get_num_threads()
    print(f"{args.arch} on {args.dataset} input, batch {args.batch}, {args.device} ({threads} threads), "
          f"median of {args.rounds} interleaved rounds")
    header = (f"{'split':<14}{'params':>12}{'MACs':>14}{'MACs ratio':>12}{'train step':>12}{'ratio':>8}"
              f"{'inference':>12}{'ratio':>8}")
    print(header)
    print("-" * len(header))
    base_train = statistics.median(train_times["unsplit"])
    base_infer = statistics.median(infer_times["unsplit"])
    rows = []
    for name, _, _ in VARIANTS:
        train, infer = statistics.median(train_times[name]), statistics.median(infer_times[name])
        macs_ratio = costs[name].macs / costs["unsplit"].macs
        print(f"{name:<14}{costs[name].params:>12,}{costs[name].macs:>14,}{macs_ratio:>12.3f}"
              f"{train * 1000:>10.0f}ms{train / base_train:>8.3f}{infer * 1000:>10.0f}ms{infer / base_infer:>8.3f}")
        rows.append({"split": name, "params": costs[name].params, "MACs ratio": round(macs_ratio, 3),
                     "train step (ms)": round(train * 1000), "train ratio": round(train / base_train, 3),
                     "inference (ms)": round(infer * 1000), "inference ratio": round(infer / base_infer, 3)})
    print("ratio < MACs ratio: faster than the MACs predict; ratio > 1: slower than the unsplit network")
    resultfiles.save("semantic_speed", rows, notes=f"{args.arch} on {args.dataset} input, batch {args.batch}, "
                     f"{args.device} ({threads} threads), median of {args.rounds} interleaved rounds; ratios are to "
                     "the unsplit network.")


if __name__ == "__main__":
    main()
