"""Shared test settings."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """Run PyTorch on one thread: the tests' networks are tiny, and on a busy 2-core machine two
    OpenMP threads made a 10 ms step take seconds (threads spinning against other processes)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
