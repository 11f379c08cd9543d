"""What runs only on a GPU: the ensembles, the semantic branches and the process groups on CUDA.

Each test is marked ``cuda`` and skipped where torch sees no CUDA device; ``benchmarks/gpu_suite.sh``
runs them on the GPU machine (``python -m pytest -m cuda tests/test_cuda.py``).  The CUDA results
are compared with the CPU's in float32 with TF32 off, within the tolerance of the two devices'
different convolution algorithms.
"""

import copy

import pytest
import torch
from torch import nn

from splitsearch.config import SplitConfig, TrainConfig
from splitsearch.ensemble import SequentialEnsemble, pack
from splitsearch.split.semantic_branches import semantic_branches

from conftest import run_cli

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

TOLERANCE = {"rtol": 1e-3, "atol": 1e-3}


@pytest.fixture(autouse=True)
def exact_float32():
    """float32 convolutions and products on the GPU, not TF32, so the CPU's results are the reference."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def random_statistics(network: nn.Module) -> nn.Module:
    """Non-trivial BN statistics, so a device that mishandled them would change the logits."""
    for module in network.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 2.0)
    return network


@pytest.mark.parametrize("way", ["sequential", "fused"])
def test_the_ensembles_compute_on_cuda_what_they_compute_on_the_cpu(way):
    from splitsearch.build import build_one

    torch.manual_seed(0)
    config = SplitConfig(arch="resnet20", S=2, width_mult=0.5, dataset="cifar10")
    networks = [random_statistics(build_one(config)) for _ in range(config.S)]
    ensemble = (SequentialEnsemble(networks) if way == "sequential" else pack(networks)).eval()
    views = torch.randn(2, 8, 3, 32, 32)
    with torch.no_grad():
        expected = ensemble(views)
        on_gpu = copy.deepcopy(ensemble).cuda()(views.cuda())
    torch.testing.assert_close(on_gpu.cpu(), expected, **TOLERANCE)


def _cut_network(seed: int = 0) -> nn.Module:
    from splitsearch.build import build_one

    torch.manual_seed(seed)
    config = SplitConfig(arch="resnet20", groups=2, split_depth="deep", width_mult=0.5, dataset="cifar10")
    return random_statistics(build_one(config)).eval()


def test_the_semantic_branches_compute_on_cuda_what_the_cut_network_does_on_the_cpu():
    network = _cut_network()
    images = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        expected = network(images)
        on_gpu = semantic_branches(network, 2, "deep").cuda().eval()(images.cuda())
    torch.testing.assert_close(on_gpu.cpu(), expected, **TOLERANCE)


def _branch_parallel_on_cuda() -> list[list[float]] | None:
    import torch.distributed as dist

    from splitsearch.split.semantic_branches import branch_parallel_logits
    from splitsearch.train.launch import rank_device

    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    device = torch.device(rank_device("cuda"))
    branches = semantic_branches(_cut_network(), 2, "deep").to(device).eval()
    torch.manual_seed(1)
    images = torch.randn(8, 3, 32, 32, device=device)
    with torch.no_grad():
        logits = branch_parallel_logits(branches, images if dist.get_rank() == 0 else None,
                                        branches.trunk(images).shape)
    return logits.cpu().tolist() if dist.get_rank() == 0 else None


def test_one_branch_per_process_on_cuda_gives_the_cut_networks_logits():
    """Two ranks: a GPU each over nccl, or both on the one GPU over gloo."""
    from splitsearch.train.launch import launch

    logits = launch(2, _branch_parallel_on_cuda, "cuda")
    torch.manual_seed(1)
    images = torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        expected = _cut_network()(images)
    torch.testing.assert_close(torch.tensor(logits), expected, **TOLERANCE)


def test_member_parallel_training_runs_on_cuda(tmp_path, capsys):
    """``train --nproc 2 --device cuda``: the logits gathered on the GPU (over gloo where the ranks share one)."""
    config = SplitConfig(arch="resnet20", S=2, width_mult=0.25, dataset="synthetic:96",
                         train=TrainConfig(epochs=1, batch_size=16, val_fraction=0.25))
    path = tmp_path / "config.yaml"
    path.write_text(config.to_yaml())
    code, out, err = run_cli(capsys, "train", path, "--device", "cuda", "--quiet", "--nproc", "2",
                             "--out", tmp_path / "run")
    assert code == 0, err
    assert "2 processes" in out and "member 2" in out
