"""The search commands as a user types them: run, export, report, dashboard, db upgrade."""

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request

import optuna
import pytest

from splitsearch.config import SplitConfig

from conftest import run_cli as run

STUDY = """\
name: cli
arch: resnet20
dataset: synthetic:96
space: divide
epochs: 2
n_trials: 3
budget_params: 30K
base: {train: {batch_size: 32, val_fraction: 0.25}}
"""



@pytest.fixture
def study_file(tmp_path):
    path = tmp_path / "cli.yaml"
    path.write_text(STUDY)
    return path


@pytest.fixture
def finished_study(tmp_path, study_file, capsys):
    storage = f"sqlite:///{tmp_path / 'cli.db'}"
    code, out, err = run(capsys, "run", study_file, "--storage", storage, "--device", "cpu",
                         "--runs-dir", tmp_path / "runs")
    assert code == 0, err
    return storage, out


def test_run_export_report_and_retrain(tmp_path, finished_study, capsys):
    storage, out = finished_study
    assert "3 complete" in out or "pruned" in out
    assert re.search(r"\ntime: the study took .+, against the plan's estimate of .+ \(\d+\.\d\dx\)\n", out)
    code, out, _ = run(capsys, "export", "--study", "cli", "--storage", storage, "-o", tmp_path / "best.yaml")
    assert code == 0 and "written to" in out
    exported = SplitConfig.from_yaml(tmp_path / "best.yaml")
    best = optuna.load_study(study_name="cli", storage=storage).best_trial
    assert exported.config_hash() == best.user_attrs["config_hash"]

    code, _, _ = run(capsys, "report", "--storage", storage, "-o", tmp_path / "report.html")  # the only study
    html = (tmp_path / "report.html").read_text()
    assert code == 0 and "Validation accuracy vs parameters" in html

    code, out, _ = run(capsys, "train", tmp_path / "best.yaml", "--device", "cpu", "--quiet", "--out", tmp_path / "re")
    metrics = json.loads((tmp_path / "re" / "metrics.json").read_text())
    assert code == 0 and metrics["val_accuracy"] == best.user_attrs["val_accuracy"]
    assert metrics["val_nll"] == pytest.approx(best.value)  # the default objective: validation NLL


def test_environment_variable_names_the_storage(tmp_path, study_file, capsys, monkeypatch):
    storage = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("SPLITSEARCH_STORAGE", storage)
    assert run(capsys, "run", study_file, "--n-trials", "1", "--device", "cpu", "--runs-dir", tmp_path / "r")[0] == 0
    study = optuna.load_study(study_name="cli", storage=storage)
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))) == 1


def _file_state(path):
    return path.stat().st_mtime_ns, path.read_bytes()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["export", "--study", "nope"], "no study 'nope'"),
        (["report", "--study", "nope"], "no study 'nope'"),
        (["run", "{study}", "--budget-params", "36Q"], "cannot read '36Q' as a count"),
        (["run", "{study}", "--budget-params", "50"], "budget too small"),
        (["run", "{study}", "--space", "{bad_space}"], "bad_space.yaml"),
        (["run", "{bad_study}"], "unknown key colour"),
        (["run", "no-such-study"], "unknown study 'no-such-study'"),
        (["run", "{study}", "--budget-params", "40K"], "exists with other settings"),
    ],
)
def test_bad_input_is_one_line_and_leaves_the_store_unchanged(tmp_path, finished_study, study_file, capsys,
                                                             argv, message):
    storage, _ = finished_study
    database = tmp_path / "cli.db"
    before = _file_state(database)
    bad_space = tmp_path / "bad_space.yaml"
    bad_space.write_text("name: bad\nparams:\n  S: {type: categorical, choices: []}\n")
    bad_study = tmp_path / "bad_study.yaml"
    bad_study.write_text(STUDY + "colour: red\n")
    names = {"{study}": study_file, "{bad_space}": bad_space, "{bad_study}": bad_study}
    argv = [names.get(part, part) for part in argv] + ["--storage", storage]
    code, out, err = run(capsys, *argv)
    assert code == 2, out + err
    assert err.count("\n") == 1 and err.startswith("Error: ") and message in err
    assert _file_state(database) == before


def test_unreachable_storage_is_one_line(tmp_path, study_file, capsys):
    # A worker waits for a storage it cannot reach (a database restarting); one told not to wait
    # says in one line that it cannot open it.
    code, _, err = run(capsys, "run", study_file, "--storage", "postgresql+psycopg://postgres@127.0.0.1:1/none",
                       "--device", "cpu", "--set", "worker.storage_retry_seconds=0")
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("Error: cannot open storage") and "127.0.0.1:1" in err and "check the URL" in err


def test_a_storage_never_reached_is_waited_for_then_refused_in_one_line(tmp_path, study_file, capsys):
    code, _, err = run(capsys, "run", study_file, "--storage", "postgresql+psycopg://postgres@127.0.0.1:1/none",
                       "--device", "cpu", "--set", "worker.storage_retry_seconds=2")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 2, err
    assert lines[0].startswith("Warning: storage") and "retrying for up to 2 s" in lines[0]
    assert lines[1].startswith("Error: cannot open storage") and "unreachable for 2 s" in lines[1]


def test_db_upgrade_creates_the_store_tables(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'fresh.db'}"
    code, out, _ = run(capsys, "db", "upgrade", "--storage", storage)
    assert code == 0 and "up to date" in out
    from sqlalchemy import create_engine, inspect

    tables = set(inspect(create_engine(storage)).get_table_names())
    assert {"splitsearch_candidates", "splitsearch_epoch_metrics", "splitsearch_alembic_version",
            "studies", "trials"} <= tables


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_dashboard_serves_the_study_from_our_storage(finished_study):
    storage, _ = finished_study
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "splitsearch.cli", "dashboard", "--storage", storage,
                               "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as response:
                    studies = json.loads(response.read())["study_summaries"]
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "optuna-dashboard did not answer within 60 s"
                time.sleep(0.5)
        assert [study["study_name"] for study in studies] == ["cli"]
        study_id = studies[0]["study_id"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study_id}", timeout=5) as response:
            detail = json.loads(response.read())
        attrs = {attr["key"] for attr in detail["trials"][0]["user_attrs"]}
        assert {"params", "macs", "flops", "config_hash"} <= attrs
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_dataset_override_drops_the_study_files_dataset_settings(tmp_path, capsys):
    """quickstart's batch 64, lr 0.05, 1-pixel padding and no flips are for digits, not for another dataset."""
    from splitsearch.config import TrainConfig
    from splitsearch.data import dataset_info
    from splitsearch.search.study import load_study_spec, resolve_study_file

    quickstart = load_study_spec(resolve_study_file("quickstart")).base.train
    assert (quickstart.batch_size, quickstart.lr, quickstart.crop_padding, quickstart.hflip) == (64, 0.05, 1, False)

    storage = f"sqlite:///{tmp_path / 'override.db'}"
    code, out, err = run(capsys, "run", "quickstart", "--dataset", "synthetic:96", "--n-trials", "1", "--epochs", "1",
                         "--budget-params", "30K", "--storage", storage, "--device", "cpu",
                         "--runs-dir", tmp_path / "r")
    assert code == 0, err
    assert "not used:" in out and "lr=0.05" in out
    assert "training: 1 epoch, batch 16, lr 0.1" in out  # synthetic:96's batch, TrainConfig's lr
    trial = optuna.load_study(study_name="quickstart", storage=storage).trials[0]
    trained = SplitConfig.from_dict(trial.user_attrs["config"]).train
    assert trained.lr == TrainConfig().lr
    _, applied = trained.with_dataset_defaults(dataset_info("synthetic:96"))
    defaults = dataset_info("synthetic:96").training_defaults
    assert applied == {"batch_size": defaults.batch_size, "crop_padding": defaults.crop_padding,
                       "hflip": defaults.hflip}
