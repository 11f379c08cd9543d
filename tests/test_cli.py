import json
import subprocess
import sys

import pytest

from splitsearch import __version__
from splitsearch.config import SplitConfig

from conftest import run_cli as run


def test_version(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and __version__ in out


def test_count_json_has_the_documented_keys(capsys):
    code, out, _ = run(capsys, "count", "--arch", "resnet20", "-S", "2", "--dataset", "cifar10", "--json")
    assert code == 0
    data = json.loads(out)
    assert {"params", "macs", "flops", "activation_bytes", "networks"} <= data.keys()
    assert len(data["networks"]) == 2
    assert data["params"] == sum(network["params"] for network in data["networks"])
    assert data["flops"] == 2 * data["macs"]


def test_count_table_lists_each_network_and_the_total(capsys):
    code, out, _ = run(capsys, "count", "--arch", "resnet20", "-S", "4", "--block-factors", "1,2,2")
    assert code == 0
    assert all(f"#{index}" in out for index in range(1, 5))
    assert "total" in out and "block_factors=1,2,2" in out


def test_count_reads_a_yaml_and_flags_override_it(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(SplitConfig(arch="resnet20", S=2).to_yaml())
    code, out, _ = run(capsys, "count", str(path), "-S", "4", "--json")
    assert code == 0 and len(json.loads(out)["networks"]) == 4


def test_fit_writes_a_config_that_loads_and_fits(tmp_path, capsys):
    output = tmp_path / "fitted.yaml"
    code, out, _ = run(capsys, "fit", "--arch", "resnet20", "-S", "2", "--budget-params", "500K", "-o", str(output))
    assert code == 0 and "of the budget" in out
    code, out, _ = run(capsys, "count", str(output), "--json")
    assert json.loads(out)["params"] <= 500_000


def test_fit_flops_budget_is_converted_to_macs(capsys):
    code, out, _ = run(capsys, "fit", "--arch", "resnet20", "--budget-flops", "80M", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["cost"]["flops"] <= 80_000_000 and data["cost"]["macs"] <= 40_000_000


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["count", "--arch", "nope"], "unknown architecture 'nope'"),
        (["count", "--arch", "resnet20", "-S", "0"], "'-S': 0 is not in the range"),
        (["count", "--arch", "resnet20", "--block-factors", "3,x"], "comma-separated positive integers"),
        (["count", "--arch", "resnet20", "--block-factors", "1,2"], "needs 3 entries"),
        (["fit", "--arch", "resnet20", "--budget-params", "36Q"], "cannot read '36Q' as a count"),
        (["fit", "--arch", "resnet20", "--budget-params", "10"], "budget too small"),
        (["fit", "--arch", "resnet20"], "give --budget-params"),
        (["count"], "give a config file or --arch"),
        (["count", "missing.yaml"], "missing.yaml: cannot read"),
        (["count", "--arch", "resnet20", "--dataset", "mnist"], "unknown dataset 'mnist'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("Error: ")
    assert message in err


def test_yaml_with_unknown_key_is_one_line_error(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("arch: resnet20\nwidth: 3\n")
    code, _, err = run(capsys, "count", str(path))
    assert code == 2 and err.strip() == f"Error: {path}: unknown key width (known keys: S, arch, block_factors, crop, " \
        "dataset, groups, lambda_cot, split_depth, train, wd_rule, width_mult)"


def test_console_script_exits_non_zero_without_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "splitsearch.cli", "count", "--arch", "nope"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("Error: unknown architecture")


def test_an_internal_error_is_a_bug_and_keeps_its_traceback(capsys, monkeypatch):
    """Only errors a user can fix (SplitsearchError) and OSError become one line; a bug shows as one."""
    import splitsearch.cost.counting

    def broken(*args, **kwargs):
        raise ValueError("an internal shape check failed")

    monkeypatch.setattr(splitsearch.cost.counting, "count_config", broken)
    with pytest.raises(ValueError, match="internal shape check"):
        run(capsys, "count", "--arch", "resnet20")


def test_the_errors_a_user_can_fix_share_one_root():
    from splitsearch.config import ConfigError
    from splitsearch.cost.fitting import BudgetError
    from splitsearch.data.specs import DataError
    from splitsearch.ensemble import FusionError
    from splitsearch.errors import SplitsearchError, TrainingError
    from splitsearch.models import ArchitectureError
    from splitsearch.search.artifacts import WeightsNotKeptError
    from splitsearch.search.export import ExportError
    from splitsearch.search.space import SpaceError
    from splitsearch.search.strategies import GreedyError
    from splitsearch.search.study import StudyError
    from splitsearch.store.records import StoreError
    from splitsearch.train.plan import WeightsMismatchError
    from splitsearch.units import UnitError

    for error in (ConfigError, BudgetError, DataError, FusionError, TrainingError, ArchitectureError, ExportError,
                  SpaceError, GreedyError, StudyError, StoreError, UnitError, WeightsNotKeptError,
                  WeightsMismatchError):
        assert issubclass(error, SplitsearchError) and issubclass(error, ValueError), error


def _tiny_train_config(tmp_path, **changes):
    from splitsearch.config import TrainConfig

    config = SplitConfig(arch="resnet20", S=2, width_mult=0.25, dataset="synthetic:96",
                         train=TrainConfig(epochs=2, batch_size=32, val_fraction=0.25))
    path = tmp_path / "tiny.yaml"
    path.write_text(config.replace(**changes).to_yaml() if changes else config.to_yaml())
    return path


def test_train_reports_ensemble_and_members_and_writes_outputs(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run(capsys, "train", str(_tiny_train_config(tmp_path)), "--out", str(out), "--device", "cpu",
                          "--epochs", "1", "--quiet")
    assert code == 0
    assert "ensemble" in stdout and "member 1" in stdout and "member 2" in stdout and "MACs" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["history"]) == 1 and metrics["val_samples"] == 19
    assert metrics["val_standard_error"] is not None
    # Choosing happens on validation accuracy: without --final the test split is not evaluated.
    assert metrics["test_accuracy"] is None and "test not evaluated" in stdout
    assert (out / "checkpoint.pt").exists() and (out / "model.pt").exists()

    # --resume on a finished run trains nothing more and reports the same figures.
    code, again, _ = run(capsys, "train", str(_tiny_train_config(tmp_path)), "--out", str(out), "--device", "cpu",
                         "--epochs", "1", "--quiet", "--resume")
    assert code == 0 and json.loads((out / "metrics.json").read_text())["history"] == metrics["history"]


def test_final_training_uses_every_training_image_and_reports_test_once(tmp_path, capsys):
    out = tmp_path / "final"
    code, stdout, _ = run(capsys, "train", str(_tiny_train_config(tmp_path)), "--final", "--out", str(out),
                          "--device", "cpu", "--epochs", "1", "--quiet")
    assert code == 0
    assert "77 training images, no validation split" in stdout and "test acc" in stdout and "val acc" not in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["train"]["val_fraction"] == 0.0 and metrics["val_samples"] == 0
    assert metrics["test_accuracy"] is not None and metrics["test_samples"] == 19


def test_train_says_which_settings_came_from_the_dataset(tmp_path, capsys):
    path = tmp_path / "digits.yaml"
    path.write_text("arch: resnet20\nS: 2\nwidth_mult: 0.25\ndataset: digits\ntrain: {epochs: 1}\n")
    code, stdout, _ = run(capsys, "train", str(path), "--out", str(tmp_path / "run"), "--device", "cpu", "--quiet")
    assert code == 0
    assert "training defaults of digits: crop_padding=1, hflip=false, batch_size=32" in stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["dataset_defaults"] == {"crop_padding": 1, "hflip": False, "batch_size": 32}
    code, stdout, _ = run(capsys, "count", str(path))
    assert "crop_padding=1, hflip=false, batch_size=32" in stdout


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--dataset", "cifar10", "--data-dir", "{tmp}/nothing-here"], "nothing-here"),
        (["--dataset", "nope"], "unknown dataset 'nope'"),
    ],
)
def test_train_bad_input_is_one_line(tmp_path, capsys, extra, message):
    argv = ["train", str(_tiny_train_config(tmp_path)), "--device", "cpu", "--out", str(tmp_path / "o")]
    argv += [part.replace("{tmp}", str(tmp_path)) for part in extra]
    code, _, err = run(capsys, *argv)
    assert code == 2 and err.count("\n") == 1 and message in err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_train_on_missing_cuda_says_so(tmp_path, capsys):
    code, _, err = run(capsys, "train", str(_tiny_train_config(tmp_path)), "--device", "cuda")
    assert code == 2 and "CUDA is not available" in err


def test_train_resume_with_another_config_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(capsys, "train", str(_tiny_train_config(tmp_path)), "--out", str(out), "--device", "cpu",
               "--epochs", "1", "--quiet")[0] == 0
    code, _, err = run(capsys, "train", str(_tiny_train_config(tmp_path, lambda_cot=0.1)), "--out", str(out),
                       "--device", "cpu", "--epochs", "1", "--quiet", "--resume")
    assert code == 2 and "different config" in err


def test_count_of_a_semantic_split_and_its_one_line_errors(capsys):
    code, out, _ = run(capsys, "count", "--arch", "wrn16_8", "-G", "2", "--split-depth", "deep",
                       "--dataset", "cifar100", "--json")
    assert code == 0 and json.loads(out)["params"] == 5_904_692
    assert json.loads(out)["config"]["split_depth"] == "deep"
    code, _, err = run(capsys, "count", "--arch", "vgg16", "-G", "2", "--dataset", "cifar10")
    assert code == 2 and err.count("\n") == 1 and "not available for vgg16" in err
    code, _, err = run(capsys, "count", "--arch", "resnet20", "-G", "2", "--split-depth", "hierarchical")
    assert code == 2 and err.count("\n") == 1 and "even number of groups" in err
