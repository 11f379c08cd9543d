"""Which GPU and which backend a rank of a process group takes on CUDA (checked without a GPU)."""

import pytest
import torch

from splitsearch.train.launch import process_group_backend, rank_device


@pytest.fixture
def rank(monkeypatch):
    """Set this process up as local rank ``local`` of ``ranks`` on a node with ``gpus`` GPUs."""
    def place(local: int, ranks: int, gpus: int) -> None:
        monkeypatch.setenv("RANK", str(local))
        monkeypatch.setenv("LOCAL_RANK", str(local))
        monkeypatch.setenv("WORLD_SIZE", str(ranks))
        monkeypatch.setenv("LOCAL_WORLD_SIZE", str(ranks))
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    return place


@pytest.mark.parametrize(("local", "ranks", "gpus", "device", "backend"), [
    (1, 2, 2, "cuda:1", "nccl"),  # a GPU per rank
    (3, 4, 4, "cuda:3", "nccl"),
    (1, 2, 1, "cuda:0", "gloo"),  # two ranks share the one GPU: NCCL refuses that
    (3, 4, 2, "cuda:1", "gloo"),
])
def test_ranks_take_the_gpus_in_turn_and_share_one_over_gloo(rank, local, ranks, gpus, device, backend):
    rank(local, ranks, gpus)
    assert rank_device("cuda") == device
    assert process_group_backend("cuda") == backend


def test_the_cpu_is_gloo_and_keeps_its_name(rank):
    rank(1, 2, 0)
    assert rank_device("cpu") == "cpu"
    assert process_group_backend("cpu") == "gloo"
