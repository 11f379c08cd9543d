"""The verdict of a pick against the baselines: paired t-intervals over shared seeds, in plain words.

The intervals are checked against hand computations (Student's t quantiles from the printed
tables), and the CLI's ``confirm`` and ``export`` are run on a study whose confirmation runs hold
known per-seed values, so what they print and write is exactly predictable.
"""

from __future__ import annotations

import math

import optuna
import pytest
import yaml

from splitsearch.config import SplitConfig, TrainConfig
from splitsearch.search.confirm import ConfirmedCandidate, study_verdicts
from splitsearch.search.record import TrialRecord
from splitsearch.search.verdict import Verdict, paired_verdict, seeds_to_resolve
from splitsearch.store import Store, upgrade

from conftest import run_cli

# Student's t quantiles from the printed tables (two-sided 95 %: the 0.975 quantile).
T_975 = {1: 12.706205, 2: 4.302653, 3: 3.182446}


def test_interval_equals_a_hand_computed_paired_t_interval() -> None:
    # Differences 1.2, 0.4, 2.0, 0.8 points: mean 1.1, squared deviations 0.01 + 0.49 + 0.81 + 0.09 = 1.40.
    pick = {1: 0.512, 2: 0.504, 3: 0.520, 4: 0.508}
    baseline = {1: 0.500, 2: 0.500, 3: 0.500, 4: 0.500, 5: 0.9}  # seed 5: the pick has no run to pair it with
    verdict = paired_verdict("undivided", 7, 0, pick, baseline)

    standard_error = math.sqrt(1.40 / 3) / math.sqrt(4) / 100
    assert verdict.seeds == (1, 2, 3, 4)
    assert verdict.mean == pytest.approx(0.011)
    assert verdict.standard_error == pytest.approx(standard_error)
    assert verdict.low == pytest.approx(0.011 - T_975[3] * standard_error, abs=1e-7)
    assert verdict.high == pytest.approx(0.011 + T_975[3] * standard_error, abs=1e-7)
    assert verdict.outcome == "better"
    assert verdict.sentence() == "better than the undivided network by 1.10 points (95 % CI 0.0 to 2.2)"


def test_a_pick_identical_to_the_undivided_network_is_not_distinguishable() -> None:
    runs = {1: 0.41, 2: 0.47, 3: 0.44}
    verdict = paired_verdict("undivided", 5, 0, runs, dict(runs))
    assert verdict.outcome == "not distinguishable"
    assert verdict.sentence().startswith("not distinguishable from the undivided network (+0.00")
    assert verdict.sentence().endswith("at this budget dividing does not pay")
    assert not verdict.pays


def test_a_tie_with_spread_is_not_distinguishable_and_a_loss_is_worse() -> None:
    # Differences +1, -1 points: mean 0, sd sqrt(2), interval 0 +- 12.706 * 1.
    tie = paired_verdict("paper S=2", 5, 1, {1: 0.51, 2: 0.49}, {1: 0.50, 2: 0.50})
    assert (tie.low, tie.high) == (pytest.approx(-T_975[1] / 100), pytest.approx(T_975[1] / 100))
    assert tie.sentence() == "not distinguishable from the paper's S=2 (+0.00, 95 % CI -12.7 to +12.7)"

    # Differences -2, -2.5, -1.5 points: mean -2, sd 0.5, interval -2 +- 4.303 * 0.5 / sqrt(3).
    loss = paired_verdict("undivided", 5, 0, {1: 0.48, 2: 0.475, 3: 0.485}, {1: 0.50, 2: 0.50, 3: 0.50})
    half = T_975[2] * 0.5 / math.sqrt(3)
    assert loss.outcome == "worse"
    assert loss.sentence() == (f"worse than the undivided network by 2.00 points (95 % CI {2 - half:.1f} to "
                               f"{2 + half:.1f}): at this budget dividing does not pay")


def test_lower_is_better_for_the_nll() -> None:
    verdict = paired_verdict("undivided", 5, 0, {1: 0.90, 2: 0.91, 3: 0.92}, {1: 1.00, 2: 1.02, 3: 1.01}, "nll")
    assert verdict.outcome == "better" and verdict.mean < 0
    assert verdict.sentence().startswith("NLL: better than the undivided network by 0.100 nats")


def test_one_shared_seed_cannot_decide() -> None:
    verdict = paired_verdict("undivided", 5, 0, {1: 0.6, 2: 0.7}, {2: 0.5, 3: 0.5})
    assert verdict.outcome == "too few seeds" and verdict.low is None and verdict.seeds_needed is None
    assert "1 shared seed" in verdict.sentence()


def test_seeds_to_resolve_a_one_point_difference() -> None:
    # Spread 1 point: n = 9 gives (2.306 + 0.889) / 3 = 1.065 > 1, n = 10 gives (2.262 + 0.883) / 3.162 = 0.995.
    assert seeds_to_resolve(0.01, 0.01) == 10
    assert seeds_to_resolve(0.0, 0.01) == 2
    assert seeds_to_resolve(1.0, 0.01) == 1001  # "more than 1000"


def test_verdicts_compare_the_best_confirmed_pick_with_every_baseline_on_shared_seeds() -> None:
    summaries = [
        ConfirmedCandidate(4, "p", None, 0.5, (1, 2, 3), (0.52, 0.53, 0.54), (0.9, 0.9, 0.9), (0.05, 0.06, 0.04)),
        ConfirmedCandidate(0, "u", "undivided", 0.5, (1, 2, 3), (0.50, 0.50, 0.51), (1.0, 1.1, 1.0), (0.1,) * 3),
        ConfirmedCandidate(1, "s", "paper S=2", 0.5, (2, 3), (0.50, 0.51), (None, None), (None, None)),
    ]
    verdicts = study_verdicts(summaries)
    assert [(verdict.metric, verdict.baseline, verdict.seeds) for verdict in verdicts] == [
        ("accuracy", "paper S=2", (2, 3)), ("accuracy", "undivided", (1, 2, 3)), ("ece", "paper S=2", ()),
        ("ece", "undivided", (1, 2, 3))]
    assert all(verdict.pick_trial == 4 for verdict in verdicts)
    assert verdicts[1].mean == pytest.approx((0.02 + 0.03 + 0.03) / 3)
    assert Verdict.from_dict(verdicts[1].to_dict()) == verdicts[1]
    # An nll study picks by the lowest mean NLL and still says how the pick compares on accuracy.
    by_nll = study_verdicts(summaries, "nll")
    assert [verdict.metric for verdict in by_nll if verdict.baseline == "undivided"] == ["nll", "accuracy", "ece"]
    undivided = next(verdict for verdict in by_nll if verdict.baseline == "undivided")
    # NLL 0.9 against 1.0, 1.1, 1.0: differences -0.1, -0.2, -0.1, sd 0.0577, interval -0.133 +- 4.303 * 0.0333.
    assert undivided.pick_trial == 4 and undivided.outcome == "not distinguishable"
    assert undivided.high == pytest.approx(-0.4 / 3 + T_975[2] * math.sqrt(0.02 / 3 / 2) / math.sqrt(3))


# -- the CLI on a study whose confirmations hold known values ---------------------------------------

CONFIG = SplitConfig(arch="resnet20", S=2, width_mult=0.25, dataset="digits", train=TrainConfig(epochs=1, seed=0))
# trial -> (baseline label, S, accuracy per confirmation seed 1..3)
TRIALS = {0: ("undivided", 1, (0.60, 0.62, 0.61)), 1: ("paper S=2", 2, (0.55, 0.57, 0.56)),
          2: (None, 2, (0.60, 0.62, 0.61))}


@pytest.fixture()
def confirmed_study(tmp_path) -> str:
    """A study of two baselines and a searched trial, each confirmed with seeds 1..3 at known accuracies;
    the searched trial's runs equal the undivided network's seed for seed."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="known", storage=storage, direction="maximize")
    upgrade(storage)
    store = Store(storage)
    for number, (label, S, accuracies) in TRIALS.items():
        config = CONFIG.replace(S=S)
        record = TrialRecord(config=config, config_hash=config.config_hash(), baseline=label, val_accuracy=0.5)
        study.add_trial(optuna.trial.create_trial(value=0.5 + number / 100, user_attrs=record.to_attrs()))
        for seed, accuracy in enumerate(accuracies, start=1):
            run = config.replace(train=TrainConfig(epochs=1, seed=seed))
            row = store.start_confirmation("known", number, run, label)
            store.finish_confirmation(row, "complete", val_accuracy=accuracy, val_nll=1.0, val_ece=0.1 + seed / 100)
    store.close()
    return storage


def test_confirm_prints_and_export_writes_the_verdict(confirmed_study, tmp_path, capsys) -> None:
    code, out, err = run_cli(capsys, "confirm", "--study", "known", "--storage", confirmed_study, "--top", "1",
                             "--seeds", "3", "--device", "cpu", "--runs-dir", tmp_path / "runs", "--quiet")
    assert code == 0, err
    # The searched trial and the undivided network tie at 61.00 %; the tie goes to the earlier trial (the
    # undivided network), which then beats the paper's S=2 by exactly 5 points on every seed.
    assert "verdict of the pick (trial 0)" in out
    assert "vs undivided: the pick is the undivided network itself: at this budget dividing does not pay" in out
    assert "vs paper S=2: better than the paper's S=2 by 5.00 points (95 % CI 5.0 to 5.0)" in out
    assert "ECE: not distinguishable from the paper's S=2 (+0.00" in out

    code, out, err = run_cli(capsys, "export", "--study", "known", "--storage", confirmed_study,
                             "-o", tmp_path / "best.yaml")
    assert code == 0, err
    assert "trial 0 of known" in out and "the pick is the undivided network itself" in out
    verdict = {row["baseline"]: row for row in yaml.safe_load((tmp_path / "best.yaml").read_text())["provenance"]
               ["verdict"] if row["metric"] == "accuracy"}
    assert verdict["undivided"]["outcome"] == "same candidate"
    assert verdict["paper S=2"]["outcome"] == "better"
    assert verdict["paper S=2"]["difference"] == pytest.approx(0.05)
    assert verdict["paper S=2"]["ci95"] == [pytest.approx(0.05), pytest.approx(0.05)]

    # The report puts the verdict table above its figures.
    code, _, err = run_cli(capsys, "report", "--study", "known", "--storage", confirmed_study,
                           "-o", tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    assert code == 0, err
    assert "better than the paper&#x27;s S=2 by 5.00 points" in page
    assert page.index("Verdict of the confirmed pick (trial 0)") < page.index("Optimisation history")


def test_a_searched_pick_that_ties_the_undivided_network_is_exported_with_its_verdict(confirmed_study, tmp_path,
                                                                                       capsys) -> None:
    # One more run of the searched trial tips its mean above the undivided network's: it becomes the pick,
    # and its three shared seeds say it is no better.
    store = Store(confirmed_study)
    row = store.start_confirmation("known", 2, CONFIG.replace(train=TrainConfig(epochs=1, seed=4)))
    store.finish_confirmation(row, "complete", val_accuracy=0.70)
    store.close()
    code, out, err = run_cli(capsys, "confirm", "--study", "known", "--storage", confirmed_study, "--top", "1",
                             "--seeds", "3", "--device", "cpu", "--runs-dir", tmp_path / "runs", "--quiet")
    assert code == 0, err
    assert ("vs undivided: not distinguishable from the undivided network (+0.00, 95 % CI +0.0 to +0.0): "
            "at this budget dividing does not pay [3 paired seeds") in out

    code, out, err = run_cli(capsys, "export", "--study", "known", "--storage", confirmed_study,
                             "-o", tmp_path / "best.yaml")
    assert code == 0, err
    assert "trial 2 of known" in out and "not distinguishable from the undivided network" in out
    provenance = yaml.safe_load((tmp_path / "best.yaml").read_text())["provenance"]
    undivided = next(row for row in provenance["verdict"] if row["baseline"] == "undivided"
                     and row["metric"] == "accuracy")
    assert undivided["outcome"] == "not distinguishable" and undivided["seeds"] == [1, 2, 3]
    assert "dividing does not pay" in undivided["sentence"]
