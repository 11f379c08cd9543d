"""Data-parallel ranks inside a member rank (``train --nproc N --data-parallel D``) with real processes (gloo).

The D ranks that hold the same members each train on a 1/D shard of the views one process draws,
with DistributedDataParallel averaging their gradients, so the weights must be the one-process
weights up to the order of floating-point sums.  That holds exactly only where a sample's output
does not depend on the rest of its batch: BatchNorm in training mode does (each rank normalises
with its shard's statistics, and torch's SyncBatchNorm, which would restore the whole batch's,
runs on GPUs only).  So the equality tests train a small network of this file with GroupNorm
(an architecture family registered for the test; the ranks receive it from the launcher), and the BatchNorm
network (resnet20) is tested for what per-rank statistics leave exact: validation metrics as one
process measures them on the written checkpoint, and resuming in one process.  The 2 x 2 grid
(four processes) is marked slow: ``python -m pytest -m slow tests/test_data_parallel.py``.
"""

from pathlib import Path

import pytest
import torch
from torch import nn

from splitsearch.config import SplitConfig, TrainConfig
from splitsearch.data import prepare_data
from splitsearch.store import Store
from splitsearch.models.registry import ArchFamily, BuildArgs
from splitsearch.train.launch import launch
from splitsearch.train.loop import CHECKPOINT_NAME, MODEL_NAME, Trainer
from splitsearch.train.plan import TrainRequest, run_training_rank

from conftest import run_cli

GROUP_NORM_FAMILY = ArchFamily(r"groupnorm_test_net", "test_data_parallel:group_norm_net",
                               examples=("groupnorm_test_net",), num_blocks=1, supports_block_split=False)


def group_norm_net(args: BuildArgs) -> nn.Module:
    """Two convolutions with GroupNorm and a classifier: each image's output is independent of its batch."""
    width = 8
    return nn.Sequential(
        nn.Conv2d(args.in_channels, width, 3, padding=1), nn.GroupNorm(2, width), nn.ReLU(),
        nn.Conv2d(width, width, 3, stride=2, padding=1), nn.GroupNorm(2, width), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, args.num_classes),
    )


pytestmark = pytest.mark.usefixtures("one_thread_per_process")


@pytest.fixture
def group_norm_arch(monkeypatch):
    """``groupnorm_test_net`` registered in this process for this test only; the ranks learn it from the launcher."""
    from splitsearch.models import registry

    monkeypatch.setattr(registry, "_FAMILIES", [*registry._FAMILIES, GROUP_NORM_FAMILY])
    return "groupnorm_test_net"


def write_config(tmp_path: Path, arch: str, S: int = 2, epochs: int = 2, batch_size: int = 15,
                 width_mult: float = 1.0) -> Path:
    """Co-training with everything that ties the members and the batch: lambda_cot from the first step, mixup
    (which pairs images across the whole batch) and erasing.  72 training images in batches of 15: the
    shards of a batch are 7 and 8 images, so the weighting of unequal shards is exercised too."""
    config = SplitConfig(arch=arch, S=S, width_mult=width_mult, lambda_cot=0.5, dataset="synthetic:96",
                         train=TrainConfig(epochs=epochs, batch_size=batch_size, val_fraction=0.25, mixup_alpha=0.2,
                                           cot_warmup_fraction=0.0, random_erasing=0.5))
    path = tmp_path / f"{arch}-S{S}-{epochs}.yaml"
    path.write_text(config.to_yaml())
    return path


def train(capsys, config: Path, out_dir: Path, *options: object) -> str:
    code, out, err = run_cli(capsys, "train", config, "--device", "cpu", "--quiet", "--out", out_dir, *options)
    assert code == 0, err
    return out


def assert_same_weights(one: Path, other: Path, tolerance: float) -> None:
    first_members = torch.load(one / MODEL_NAME, weights_only=True)["members"]
    other_members = torch.load(other / MODEL_NAME, weights_only=True)["members"]
    for first, second in zip(first_members, other_members, strict=True):
        for name, value in first.items():
            torch.testing.assert_close(second[name], value, rtol=0, atol=tolerance, msg=name)


def history(out_dir: Path) -> list[dict]:
    return torch.load(out_dir / CHECKPOINT_NAME, weights_only=True)["history"]


def assert_same_metrics(one: Path, other: Path) -> None:
    """The same validation accuracies, ensemble and members, and the same training losses up to rounding."""
    for first, second in zip(history(one), history(other), strict=True):
        assert second["val_accuracy"] == first["val_accuracy"]
        assert second["val_member_accuracies"] == first["val_member_accuracies"]
        for key in ("train_loss", "train_cross_entropy", "train_cotraining", "val_nll", "val_ece", "val_brier"):
            assert second[key] == pytest.approx(first[key], rel=1e-5), key


def test_two_data_ranks_train_the_members_as_one_process(tmp_path, capsys, group_norm_arch):
    config = write_config(tmp_path, group_norm_arch)
    train(capsys, config, tmp_path / "one")
    out = train(capsys, config, tmp_path / "data", "--nproc", "2", "--data-parallel", "2")
    assert "2 processes (1 member ranks x 2 data ranks)" in out
    # Summed in another order (two shards, then DDP's average), the gradients differ in the last bits only.
    assert_same_weights(tmp_path / "one", tmp_path / "data", tolerance=1e-5)
    assert_same_metrics(tmp_path / "one", tmp_path / "data")


@pytest.mark.slow  # four processes: about a minute on two busy cores
def test_a_grid_of_two_member_ranks_by_two_data_ranks_trains_as_one_process(tmp_path, capsys, group_norm_arch):
    config = write_config(tmp_path, group_norm_arch)
    train(capsys, config, tmp_path / "one")
    out = train(capsys, config, tmp_path / "grid", "--nproc", "4", "--data-parallel", "2")
    assert "4 processes (2 member ranks x 2 data ranks)" in out
    assert_same_weights(tmp_path / "one", tmp_path / "grid", tolerance=1e-5)
    assert_same_metrics(tmp_path / "one", tmp_path / "grid")


class StopAfterFirstEpoch:
    """A reporter (rank 0's) that stops the training after its first epoch, as a pruned trial stops."""

    progress = False

    def data_plan(self, plan) -> None:
        pass

    def epoch(self, plan, metrics) -> bool:
        return True

    def write_error(self, error) -> None:
        raise error


def test_per_rank_batch_norm_checkpoint_measures_as_reported_and_resumes_in_one_process(tmp_path, capsys):
    """resnet20 (BatchNorm, per-rank statistics): the checkpoint two data ranks wrote after one of two epochs
    is in the one-process format; one process measures on it the validation accuracies the ranks reported
    (24 images in two batches, one per rank) and continues it."""
    config_path, out_dir = write_config(tmp_path, "resnet20", batch_size=16, width_mult=0.25), tmp_path / "run"
    config = SplitConfig.from_yaml(config_path)
    request = TrainRequest(config=config, out_dir=out_dir, data_parallel=2)
    outcome = launch(2, run_training_rank, "cpu", request, StopAfterFirstEpoch())
    assert outcome.result.stopped_early
    written = history(out_dir)
    assert len(written) == 1

    trainer = Trainer(config, prepare_data(config.dataset, config.train, "cpu"), "cpu", out_dir, progress=False)
    assert trainer.load_checkpoint()
    scores = trainer.evaluate(trainer.data.val)
    assert (scores.accuracy, scores.member_accuracies) == (written[0]["val_accuracy"],
                                                           written[0]["val_member_accuracies"])
    # The calibration the two ranks reported, each from its own batch (ECE's states gathered over the ranks).
    assert (scores.calibration.nll, scores.calibration.ece, scores.calibration.brier) == (
        pytest.approx(written[0]["val_nll"], rel=1e-5), pytest.approx(written[0]["val_ece"], rel=1e-5),
        pytest.approx(written[0]["val_brier"], rel=1e-5))
    assert [member.ece for member in scores.member_calibration] == pytest.approx(written[0]["val_member_ece"], rel=1e-5)

    train(capsys, config_path, out_dir, "--resume")
    resumed = history(out_dir)
    assert len(resumed) == 2 and resumed[0] == written[0]
    assert len(torch.load(out_dir / MODEL_NAME, weights_only=True)["members"]) == 2


@pytest.mark.parametrize(("nproc", "data_parallel", "message"), [
    (4, 3, "Error: --data-parallel 3 does not divide the 4 processes: use a number of processes that is a multiple "
           "of 3"),
    (6, 2, "Error: 3 member ranks (6 processes / --data-parallel 2) cannot share 2 members equally: use member "
           "ranks that divide S=2"),
    (1, 2, "Error: --data-parallel 2 does not divide the 1 processes: use a number of processes that is a multiple "
           "of 2"),
])
def test_a_grid_that_cannot_hold_the_members_is_refused_in_one_line(tmp_path, capsys, nproc, data_parallel, message):
    code, out, err = run_cli(capsys, "train", write_config(tmp_path, "resnet20", epochs=1), "--device", "cpu",
                             "--nproc", nproc, "--data-parallel", data_parallel)
    assert (code, out, err.strip()) == (2, "", message)


@pytest.mark.parametrize(("options", "message"), [
    (["--nproc", "2", "--data-parallel", "2", "--sync-bn"],
     "Error: --sync-bn needs CUDA: torch's SyncBatchNorm runs on GPUs only; on the CPU leave it out (each data rank "
     "then normalises with its own shard's statistics)"),
    (["--nproc", "2", "--sync-bn"],
     "Error: --sync-bn shares BatchNorm statistics between data ranks: use it with --data-parallel 2 or more"),
])
def test_sync_bn_is_refused_in_one_line_where_it_cannot_run(tmp_path, capsys, options, message):
    code, out, err = run_cli(capsys, "train", write_config(tmp_path, "resnet20", epochs=1), "--device", "cpu",
                             *options)
    assert (code, out, err.strip()) == (2, "", message)


def test_sync_bn_converts_every_batch_norm_and_keeps_the_one_process_checkpoint_keys():
    """What --sync-bn does before training, checked without a GPU (SyncBatchNorm's forward needs one)."""
    from splitsearch.build import build_networks
    from splitsearch.ensemble import SequentialEnsemble
    from splitsearch.errors import TrainingError
    from splitsearch.train.parallel import MemberGroup

    ensemble = SequentialEnsemble(build_networks(SplitConfig(arch="resnet20", S=2, width_mult=0.25)))
    norms, keys = sum(isinstance(m, nn.BatchNorm2d) for m in ensemble.modules()), list(ensemble.state_dict())
    group = MemberGroup(rank=0, world=1, members=2, data_rank=0, data_ranks=2)
    with pytest.raises(TrainingError, match="--sync-bn needs CUDA"):
        group.sync_batch_norm(ensemble, torch.device("cpu"))
    converted = group.sync_batch_norm(ensemble, torch.device("cuda"))
    assert norms > 0 and sum(isinstance(m, nn.SyncBatchNorm) for m in converted.modules()) == norms
    assert not any(isinstance(m, nn.BatchNorm2d) for m in converted.modules())
    assert list(converted.state_dict()) == keys


def test_a_batch_smaller_than_the_data_ranks_is_refused_in_one_line(tmp_path, capsys):
    code, out, err = run_cli(capsys, "train", write_config(tmp_path, "resnet20", epochs=1, batch_size=1),
                             "--device", "cpu", "--nproc", "2", "--data-parallel", "2")
    assert (code, out, err.strip()) == (
        2, "", "Error: train.batch_size 1 cannot be shared by 2 data ranks: use a batch of at least 2 images")


def test_a_worker_gives_each_trial_member_ranks_that_share_its_S_times_the_data_ranks():
    from splitsearch.search.execution import ExecutionOptions

    execution = ExecutionOptions(nproc_per_trial=4, data_parallel=2)
    configs = {S: SplitConfig(arch="resnet20", S=S) for S in (1, 2, 4)}
    configs["semantic"] = SplitConfig(arch="resnet20", S=2, groups=2)
    grids = {key: (execution.trial_processes(config), execution.trial_member_ranks(config),
                   execution.trial_data_parallel(config)) for key, config in configs.items()}
    # The semantic split's ranks each learn their own members' groups: member ranks, no data ranks.
    assert grids == {1: (2, 1, 2), 2: (4, 2, 2), 4: (4, 2, 2), "semantic": (2, 2, 1)}


def test_a_worker_refuses_data_ranks_that_do_not_divide_its_processes_in_one_line(tmp_path, capsys):
    code, out, err = run_cli(capsys, "run", "--storage", f"sqlite:///{tmp_path / 'study.db'}", "--device", "cpu",
                             "--nproc-per-trial", "3", "--set", "worker.data_parallel=2", "--runs-dir", tmp_path / "runs")
    assert (code, out, err.strip()) == (
        2, "", "Error: worker.data_parallel 2 does not divide --nproc-per-trial 3: use a multiple of 2 processes per "
               "trial")
    assert not (tmp_path / "study.db").exists()


@pytest.mark.slow  # three trials, each a new group of two processes: minutes on a busy 2-core machine
def test_a_search_trains_its_trials_on_data_ranks(tmp_path, capsys):
    """The quick-start study's baselines (S = 1, 2, 4), each trained by 1 member rank x 2 data ranks."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    code, out, err = run_cli(capsys, "run", "--study", "dp", "--storage", storage, "--epochs", "2", "--device", "cpu",
                             "--runs-dir", tmp_path / "runs", "--n-trials", "3", "--nproc-per-trial", "2",
                             "--set", "worker.data_parallel=2")
    assert code == 0, err
    assert "3 complete" in out
    rows = sorted(Store(storage).candidates("dp"), key=lambda row: row.trial_number)
    assert [(row.state, row.S) for row in rows] == [("complete", 1), ("complete", 2), ("complete", 4)]
    assert all(0 <= row.val_accuracy <= 1 for row in rows)
