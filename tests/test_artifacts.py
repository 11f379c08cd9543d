"""What a search trained is kept: trial weights in Optuna's artifact store, the keep policy, export --weights,
train --init-from and the dashboard's listing of a trial's files."""

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore, download_artifact, get_all_artifact_meta
from optuna.artifacts.exceptions import ArtifactNotFound
from optuna.trial import TrialState

from splitsearch.config import SplitConfig
from splitsearch.data import prepare_data
from splitsearch.search.record import TrialRecord
from splitsearch.train.loop import Trainer
from splitsearch.train.plan import read_weights, start_from

from conftest import run_cli as run

# Three baselines and four searched candidates, small enough for a CPU under a minute.
STUDY = """\
name: kept
arch: resnet20
dataset: synthetic:96
space: divide
epochs: 2
n_trials: 7
budget_params: 20K
pruner: none
base: {train: {batch_size: 32, val_fraction: 0.25}}
"""


@pytest.fixture(scope="module")
def kept_study(tmp_path_factory):
    """A finished study run with worker.keep_best 2: (storage URL, study, artifacts folder, its folder)."""
    folder = tmp_path_factory.mktemp("kept")
    (folder / "kept.yaml").write_text(STUDY)
    storage = f"sqlite:///{folder / 'kept.db'}"
    result = subprocess.run([sys.executable, "-m", "splitsearch.cli", "run", str(folder / "kept.yaml"), "--storage",
                             storage, "--device", "cpu", "--runs-dir", str(folder / "runs"), "--set", "worker.keep_best=2"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return storage, optuna.load_study(study_name="kept", storage=storage), folder / "runs" / "artifacts", folder


def _artifacts(study: optuna.Study, store: FileSystemArtifactStore, folder: Path) -> dict[int, int]:
    """How many artifacts per trial Optuna lists and can download (a removed one's metadata stays listed)."""
    counts = {}
    for trial in study.trials:
        counts[trial.number] = 0
        for meta in get_all_artifact_meta(trial, storage=study._storage):
            try:
                download_artifact(artifact_store=store, file_path=str(folder / meta.artifact_id),
                                  artifact_id=meta.artifact_id)
            except ArtifactNotFound:
                continue
            counts[trial.number] += 1
    return counts


def test_the_best_two_searched_trials_and_the_baselines_keep_their_weights(kept_study, tmp_path):
    _, study, artifacts_dir, _ = kept_study
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    trained = [trial for trial in complete if TrialRecord.from_trial(trial).artifact_id is not None]
    baselines = {trial.number for trial in trained if TrialRecord.from_trial(trial).is_baseline}
    searched = [trial for trial in trained if trial.number not in baselines]
    assert len(baselines) == 3 and len(searched) >= 3, "the study must push a searched trial out of the best 2"
    # The study minimises validation NLL (the default objective): the best two have the lowest.
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    best = {trial.number for trial in sorted(searched, key=lambda trial: (trial.value, trial.number))[:2]}
    listed = _artifacts(study, FileSystemArtifactStore(str(artifacts_dir)), tmp_path)
    assert {number for number, count in listed.items() if count} == baselines | best
    assert all(count in (0, 2) for count in listed.values()), "model.pt and metrics.json"
    # The store holds exactly those files: the others' were removed, not only forgotten.
    assert len(list(artifacts_dir.iterdir())) == 2 * len(baselines | best)
    removed = {number for trial in study.trials for number in TrialRecord.from_trial(trial).removed_artifacts or ()}
    assert removed == {trial.number for trial in searched} - best


def test_export_weights_reproduce_the_trials_validation_accuracy(kept_study, capsys):
    storage, study, artifacts_dir, folder = kept_study
    code, out, err = run(capsys, "export", "--storage", storage, "-o", folder / "best.yaml", "--weights",
                         "--artifacts-dir", artifacts_dir)
    assert code == 0, err
    assert (folder / "best.pt").is_file() and "best.pt" in out
    config = SplitConfig.from_yaml(folder / "best.yaml")
    data = prepare_data(config.dataset, config.train, "cpu")
    for mode in ("sequential", "fused"):  # the search trained them sequentially (the CPU's mode); fused packs them
        trainer = Trainer(config, data, "cpu", None, mode, progress=False)
        start_from(trainer, read_weights(folder / "best.pt", config.S), folder / "best.pt")
        evaluation = trainer.evaluate(data.val)
        assert evaluation.accuracy == TrialRecord.from_trial(study.best_trial).val_accuracy, mode
        assert evaluation.calibration.nll == pytest.approx(study.best_trial.value, rel=1e-4), mode


def test_export_weights_of_a_trial_whose_weights_are_gone_says_how_to_retrain(kept_study, tmp_path, capsys):
    storage, _, _, _ = kept_study
    code, _, err = run(capsys, "export", "--storage", storage, "-o", tmp_path / "best.yaml", "--weights",
                       "--artifacts-dir", tmp_path / "empty-store")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"splitsearch train {tmp_path / 'best.yaml'}" in err and not (tmp_path / "best.pt").exists()


def test_train_init_from_fine_tunes_and_refuses_weights_of_another_shape(kept_study, tmp_path, capsys):
    storage, _, artifacts_dir, folder = kept_study
    run(capsys, "export", "--storage", storage, "-o", tmp_path / "best.yaml", "--weights", "--artifacts-dir",
        artifacts_dir)
    code, out, err = run(capsys, "train", tmp_path / "best.yaml", "--init-from", tmp_path / "best.pt", "--epochs", "1",
                         "--device", "cpu", "--quiet", "--out", tmp_path / "tuned")
    assert code == 0, err
    assert (tmp_path / "tuned" / "model.pt").is_file()
    wider = SplitConfig.from_yaml(tmp_path / "best.yaml")
    (tmp_path / "wider.yaml").write_text(wider.replace(width_mult=wider.width_mult * 2).to_yaml())
    code, _, err = run(capsys, "train", tmp_path / "wider.yaml", "--init-from", tmp_path / "best.pt", "--epochs", "1",
                       "--device", "cpu", "--quiet", "--out", tmp_path / "wider")
    assert code == 2 and "does not fit the config" in err and len(err.strip().splitlines()) == 1


def test_the_dashboard_lists_a_trials_artifacts(kept_study):
    storage, study, artifacts_dir, _ = kept_study
    kept = next(trial for trial in study.trials if TrialRecord.from_trial(trial).artifact_id is not None)
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "splitsearch.cli", "dashboard", "--storage", storage, "--port",
                               str(port), "--artifacts-dir", str(artifacts_dir)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        detail = _get_json(server, f"http://127.0.0.1:{port}/api/studies/{study._study_id}")
        trial = next(trial for trial in detail["trials"] if trial["number"] == kept.number)
        record = TrialRecord.from_trial(kept)
        assert {(artifact["artifact_id"], artifact["filename"]) for artifact in trial["artifacts"]} == {
            (record.artifact_id, "model.pt"), (record.metrics_artifact_id, "metrics.json")}
        assert detail["objective_names"] == ["validation NLL"]
    finally:
        server.terminate()
        server.wait(timeout=10)


def _get_json(server: subprocess.Popen, url: str) -> dict:
    """``url``'s JSON once the server answers (it takes a few seconds to import and start)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            assert server.poll() is None, server.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "optuna-dashboard did not answer within 60 s"
            time.sleep(0.5)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_two_objective_study_keeps_the_weights_of_its_pareto_front(tmp_path):
    """(accuracy up, params down): a dominated searched trial loses its weights, a dominated baseline does not."""
    from splitsearch.search.artifacts import ArtifactKeeper, file_store

    study = optuna.create_study(directions=["maximize", "minimize"])
    points = {0: ((0.5, 900.0), "undivided"), 1: ((0.9, 500.0), None), 2: ((0.8, 400.0), None),
              3: ((0.7, 600.0), None)}
    for number, (values, baseline) in points.items():
        attrs = TrialRecord(artifact_id=f"id-{number}", baseline=baseline).to_attrs()
        study.add_trial(optuna.trial.create_trial(values=list(values), user_attrs=attrs))
    keeper = ArtifactKeeper(file_store(tmp_path), keep_best=1)
    # The running trial 4 at (0.85, 450) dominates none of the front, and is on it.
    study.add_trial(optuna.trial.create_trial(state=TrialState.RUNNING,
                                              user_attrs=TrialRecord(artifact_id="id-4").to_attrs()))
    assert keeper.dropped(study, 4, (0.85, 450.0)) == [(3, ("id-3",))]


def test_train_init_from_a_file_that_is_no_weights_file_is_one_line(tmp_path, capsys):
    """A YAML given as weights made torch.load raise an IndexError, which used to escape as a traceback."""
    config_file = tmp_path / "best.yaml"
    config_file.write_text(SplitConfig(arch="resnet20", width_mult=0.25).to_yaml())
    code, _, err = run(capsys, "train", config_file, "--init-from", config_file, "--epochs", "1", "--device", "cpu",
                       "--quiet", "--out", tmp_path / "run")
    assert code == 2 and err.startswith(f"Error: cannot read weights from {config_file}")
    assert len(err.strip().splitlines()) == 1
