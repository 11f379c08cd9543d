"""The trial and study records: what splitsearch keeps in Optuna's user attributes, typed."""

import optuna
import pytest

from splitsearch.config import SplitConfig
from splitsearch.search.record import GreedySummary, StudyRecord, TrialRecord, count_trials


@pytest.fixture
def study():
    return optuna.create_study(storage="sqlite:///:memory:")


def test_a_trial_record_round_trips_through_a_real_trial(study):
    config = SplitConfig(arch="resnet20", S=2, dataset="synthetic:32")
    written = TrialRecord(config=config, config_hash=config.config_hash(), params=1234, baseline="paper S=2",
                          worker={"host": "h", "pid": 7}, member_val_accuracies=(0.5, 0.25),
                          class_groups=("0,1 | 2,3",), interrupted=False)
    trial = study.ask()
    written.write_to(trial)
    study.tell(trial, 0.5)
    frozen = study.trials[0]
    assert TrialRecord.from_trial(frozen) == written
    assert frozen.user_attrs["config"] == config.to_dict()  # what optuna-dashboard shows: plain JSON
    assert "failure" not in frozen.user_attrs  # unrecorded fields are not written as null


def test_writing_a_partial_record_keeps_the_other_fields(study):
    trial = study.ask()
    TrialRecord(baseline="undivided").write_to(trial)
    TrialRecord(failure="RuntimeError: boom").write_to(trial)
    record = TrialRecord.from_trial(trial)
    assert (record.baseline, record.failure, record.is_baseline) == ("undivided", "RuntimeError: boom", True)


def test_an_enqueued_record_reaches_the_trial(study):
    study.enqueue_trial({"x": 1.0}, user_attrs=TrialRecord(baseline="undivided", tuned_from=3).to_attrs())
    trial = study.ask()
    assert TrialRecord.from_trial(trial) == TrialRecord(baseline="undivided", tuned_from=3)


def test_a_study_record_with_a_greedy_summary_round_trips(study):
    summary = GreedySummary(factors=(1, 2), threshold_points=0.5, baseline_accuracy=0.7, accuracy=0.69,
                            drop_points=1.0, trial=3, baseline_trial=0, evaluated=4, params=10, macs=20,
                            activation_bytes=None, sequential_activation_bytes=8, params_baseline=12,
                            macs_baseline=30, activation_bytes_baseline=None, sequential_activation_bytes_baseline=9)
    StudyRecord(checkpoint_key="abc", objectives=("accuracy", "params"), greedy_result=summary).write_to(study)
    assert StudyRecord.from_study(study) == StudyRecord(checkpoint_key="abc", objectives=("accuracy", "params"),
                                                        greedy_result=summary)
    assert study.user_attrs["greedy_result"]["factors"] == [1, 2]


def test_repeats_are_counted_apart_and_only_the_samplers_repeats_make_a_run(study):
    """A repeat completes but is not a candidate; baselines neither add to a run of repeats nor break it."""
    def told(value, state=optuna.trial.TrialState.COMPLETE, **record):
        trial = study.ask()
        TrialRecord(**record).write_to(trial)
        study.tell(trial, value if state == optuna.trial.TrialState.COMPLETE else None, state=state)

    told(0.5, baseline="undivided")
    told(0.6)
    told(0.5, repeat_of=0)
    told(None, state=optuna.trial.TrialState.PRUNED)
    told(0.6, repeat_of=1)
    told(0.5, baseline="undivided (tuned)", repeat_of=0)
    told(0.6, repeat_of=1)
    study.ask()  # running: not an ended proposal
    counts = count_trials(study)
    assert (counts.complete, counts.pruned, counts.repeats, counts.running) == (2, 1, 4, 1)
    assert (counts.finished, counts.total, counts.repeats_in_a_row) == (3, 8, 2)
    told(0.7)
    assert count_trials(study).repeats_in_a_row == 0
