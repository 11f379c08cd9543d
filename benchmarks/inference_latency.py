"""Latency of one batch through the S members or the G branches: one after another vs packed vs one process each.

Run (a few minutes on 2 CPU cores):
    python benchmarks/inference_latency.py
    python benchmarks/inference_latency.py --arch wrn16_4 --batches 1,100 --repeats 50
    python benchmarks/inference_latency.py --device cuda --arch wrn16_8   # what benchmarks/gpu_suite.sh runs

Zhao et al. (divide and co-train; Fig. 2 right, Fig. 6) measure the inference latency of its divided networks with one
member per device.  The first table does the same for ``--arch`` on 32x32 inputs, S=2:

* ``undivided``: the S=1 network, one process with every core's thread;
* ``sequential``: the two members one after another, one process with every core's thread;
* ``packed``: the two members packed into one network, one process with every core's thread;
* ``parallel``: one process per member with cores/2 threads each (a torch.distributed group over
  gloo): both run their member on the same batch, the logits are gathered and averaged.

The second table is SplitNet's test-time parallelism (Kim et al. 2017): a semantic split of ``--arch``
in ``--groups`` branches at ``--depth``, cut, with the same weights four ways:

* ``unsplit``: the network before the cut (groups 1);
* ``grouped``: the cut network as it trains, the branches side by side in grouped convolutions;
* ``branches``: the shared lower layers once, then the G branches one after another
  (:class:`~splitsearch.split.semantic_branches.SemanticBranches`);
* ``branch-par``: one process per branch: rank 0 computes the shared layers and broadcasts their
  output, each rank runs its branch, one all-reduce gathers the logits
  (:func:`~splitsearch.split.semantic_branches.branch_parallel_logits`).

Every way runs in eval mode under ``torch.inference_mode``, with bf16 autocast on CUDA, as
:func:`splitsearch.cost.latency.measure_latency` (what a search's ``--budget-latency`` and latency
objective measure) runs a candidate.  The single-process ways are timed by that module
(``torch.utils.benchmark.Timer``'s median after 3 warm-up passes: ``measure_latency`` for the
members, ``time_call`` for the semantic ways).  A parallel way needs its processes synchronised
by a barrier before each pass, which those do not do, so it is the median over ``--repeats``
passes after 5 warm-up passes, each preceded by a barrier (and the GPU synchronised around the
clock readings).  With ``--device cuda`` the processes of a parallel way have a GPU each where
there are enough, and share the one GPU (over gloo) where there is one.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

WARMUP = 5


def time_forward(run: Callable[[], object], repeats: int, device: torch.device,
                 barrier: Callable[[], object] | None = None) -> float:
    """Median seconds of ``run()`` over ``repeats`` calls after the warm-up (the GPU synchronised)."""
    times = []
    for index in range(WARMUP + repeats):
        if barrier is not None:
            barrier()
        _synchronize(device)
        start = time.perf_counter()
        run()
        _synchronize(device)
        if index >= WARMUP:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rank_device(device: str) -> torch.device:
    from splitsearch.train.launch import rank_device

    return torch.device(rank_device(device))


# -- divide and co-train: S members ---------------------------------------------------------------


def _inference(device: torch.device) -> contextlib.ExitStack:
    """Inference as the search's latency measures it: inference mode, bf16 autocast on CUDA."""
    stack = contextlib.ExitStack()
    stack.enter_context(torch.inference_mode())
    stack.enter_context(torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"))
    return stack


def single_process(arch: str, batch: int, device: str) -> dict[str, float]:
    """Seconds of one pass of each single-process way, as the search measures a candidate's latency."""
    from splitsearch.config import SplitConfig
    from splitsearch.cost.latency import measure_latency

    return {way: measure_latency(SplitConfig(arch=arch, S=S, dataset="cifar10"), device, mode, batch).seconds
            for way, S, mode in (("undivided", 1, "sequential"), ("sequential", 2, "sequential"),
                                 ("packed", 2, "fused"))}


def parallel_rank(arch: str, batch: int, repeats: int, device: str) -> float | None:
    """One member per rank on the same batch, logits gathered and averaged; rank 0's median seconds."""
    import torch.distributed as dist

    from splitsearch.config import SplitConfig
    from splitsearch.ensemble import combine_logits, make_ensemble
    from splitsearch.train.parallel import MemberGroup

    place = _rank_device(device)
    config = SplitConfig(arch=arch, S=2, dataset="cifar10")
    group = MemberGroup.from_process_group(config.S)
    member = make_ensemble(config, mode="sequential", members=group.own, device=place).eval()
    torch.manual_seed(0)
    images = torch.randn(batch, 3, 32, 32, device=place)  # the same batch on every rank
    with _inference(place):
        seconds = time_forward(lambda: combine_logits(group.gather(member(images.unsqueeze(0)))), repeats, place,
                               barrier=dist.barrier)
    return seconds if group.is_main else None


# -- semantic split: G branches above shared lower layers -----------------------------------------


def _semantic_network(arch: str, groups: int, depth: str | None, device: torch.device) -> torch.nn.Module:
    """The network of ``arch`` cut into ``groups`` at ``depth`` (unsplit for groups 1), the same on every rank."""
    from splitsearch.build import build_one
    from splitsearch.config import SplitConfig

    torch.manual_seed(0)
    with torch.device(device):
        return build_one(SplitConfig(arch=arch, groups=groups, split_depth=depth, dataset="cifar10")).eval()


def semantic_single_process(arch: str, groups: int, depth: str, batch: int, device: str) -> dict[str, float]:
    from splitsearch.cost.latency import time_call
    from splitsearch.split.semantic_branches import semantic_branches

    place = torch.device(device)
    images = torch.randn(batch, 3, 32, 32, device=place)
    cut = _semantic_network(arch, groups, depth, place)
    networks = {"unsplit": _semantic_network(arch, 1, None, place), "grouped": cut,
                "branches": semantic_branches(cut, groups, depth).to(place).eval()}

    def timed(network: torch.nn.Module) -> float:
        def forward() -> torch.Tensor:
            with _inference(place):
                return network(images)
        return time_call(forward).median

    return {way: timed(network) for way, network in networks.items()}


def semantic_parallel_rank(arch: str, groups: int, depth: str, batch: int, repeats: int,
                           device: str) -> float | None:
    """One branch per rank; rank 0 computes the shared layers once; rank 0's median seconds."""
    import torch.distributed as dist

    from splitsearch.split.semantic_branches import branch_parallel_logits, semantic_branches

    place = _rank_device(device)
    branches = semantic_branches(_semantic_network(arch, groups, depth, place), groups, depth).to(place).eval()
    rank = dist.get_rank()
    images = torch.randn(batch, 3, 32, 32, device=place) if rank == 0 else None
    with _inference(place):
        shared = branches.trunk(torch.zeros(batch, 3, 32, 32, device=place))
        seconds = time_forward(lambda: branch_parallel_logits(branches, images, shared.shape, shared.dtype), repeats,
                               place, barrier=dist.barrier)
    return seconds if rank == 0 else None


def _row(label: object, latencies: dict[str, float], ways: tuple[str, ...], parallel: str, one_process: str) -> str:
    return (f"{label:>6}" + "".join(f"{latencies[way] * 1000:>10.2f}ms" for way in ways)
            + f"{latencies[parallel] / latencies[ways[0]]:>12.2f}x"
            + f"{latencies[parallel] / latencies[one_process]:>12.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("--batches", default="1,100", help="comma-separated batch sizes")
    parser.add_argument("--repeats", type=int, default=30, help="timed passes of the parallel ways")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="threads of the one-process ways (default: every core; 1 where other jobs load the "
                             "cores, whose spinning threads would time the load, not the ways)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--tables", default="members,semantic", help="which tables: members, semantic or both")
    parser.add_argument("--groups", type=int, default=2, help="branches of the semantic split")
    parser.add_argument("--depth", default="deep", choices=("fc", "shallow", "deep"),
                        help="where the semantic split starts (the hierarchical split is a tree, not G branches)")
    options = parser.parse_args()
    if options.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    tables = set(options.tables.split(","))
    if not tables or tables - {"members", "semantic"}:
        parser.error(f"--tables: members, semantic or both, not {options.tables!r}")
    if options.groups < 2:
        parser.error("--groups: at least 2 branches")
    sys.path.insert(0, str(Path(__file__).resolve().parent))  # the ranks import this module by name
    batches = [int(value) for value in options.batches.split(",")]
    cores = os.cpu_count() or 1
    torch.set_num_threads(options.threads)
    if options.device == "cuda":
        gpus = torch.cuda.device_count()
        where = (f"{torch.cuda.get_device_name()}, bf16 autocast; parallel ways: a process per member or branch, "
                 + ("each on its own GPU" if gpus >= options.groups else f"sharing {gpus} GPU(s) over gloo"))
    else:
        where = (f"{cores} cores: one process x {options.threads} thread(s), or one process per member/branch "
                 f"x {max(1, cores // 2)}")
    print(f"torch {torch.__version__}; {options.arch} on 32x32 inputs, eval mode; {where}; median of Timer's "
          f"measurements (one process) or of {options.repeats} passes (parallel ways)")
    if "members" in tables:
        members_table(options, batches)
    if "semantic" in tables:
        semantic_table(options, batches)


def members_table(options: argparse.Namespace, batches: list[int]) -> None:
    from splitsearch.train.launch import launch

    ways = ("undivided", "sequential", "packed", "parallel")
    print(f"\ndivide and co-train, S=2 vs S=1\n{'batch':>6}" + "".join(f"{way:>12}" for way in ways)
          + f"{'par/undiv':>13}{'par/seq':>13}")
    for batch in batches:
        latencies = single_process(options.arch, batch, options.device)
        latencies["parallel"] = launch(2, parallel_rank, options.device, options.arch, batch, options.repeats,
                                       options.device)
        print(_row(batch, latencies, ways, "parallel", "sequential"), flush=True)


def semantic_table(options: argparse.Namespace, batches: list[int]) -> None:
    from splitsearch.train.launch import launch

    ways = ("unsplit", "grouped", "branches", "branch-par")
    print(f"\nsemantic split, G={options.groups} branches from the {options.depth} split up, shared layers below"
          f"\n{'batch':>6}" + "".join(f"{way:>12}" for way in ways) + f"{'par/unsplit':>13}{'par/branches':>13}")
    for batch in batches:
        latencies = semantic_single_process(options.arch, options.groups, options.depth, batch, options.device)
        latencies["branch-par"] = launch(options.groups, semantic_parallel_rank, options.device, options.arch,
                                         options.groups, options.depth, batch, options.repeats, options.device)
        print(_row(batch, latencies, ways, "branch-par", "branches"), flush=True)


if __name__ == "__main__":
    main()
