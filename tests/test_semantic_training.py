"""Training a semantic split: learn the groups, cut, fine-tune; resumable on both sides of the cut."""

import json

import pytest
import torch

from splitsearch.build import build_networks
from splitsearch.config import SplitConfig, TrainConfig
from splitsearch.cost.counting import count_config
from splitsearch.data import prepare_data
from splitsearch.split.semantic import GroupedLinear
from splitsearch.train.loop import METRICS_NAME, MODEL_NAME, Trainer
from splitsearch.train.semantic_stage import CLASS_GROUPS_NAME

from conftest import runs_in


def semantic_config(**train) -> SplitConfig:
    settings = {"epochs": 4, "batch_size": 32, "lr": 0.05, "val_fraction": 0.2, "grouping_fraction": 0.5, **train}
    return SplitConfig(arch="resnet20", S=2, groups=2, split_depth="deep", width_mult=0.25, dataset="synthetic:160",
                       train=TrainConfig(**settings))


def trainer(config, out_dir, **kwargs) -> Trainer:
    return Trainer(config, prepare_data(config.dataset, config.train), out_dir=out_dir, progress=False, **kwargs)


def test_groups_are_learned_then_the_members_are_cut_and_fine_tuned(tmp_path):
    config = semantic_config()
    run = trainer(config, tmp_path)
    result = run.fit()

    regularisers = [epoch.train_regularisers for epoch in result.history]
    assert all(value > 0 for value in regularisers[:2]) and regularisers[2:] == [0.0, 0.0]
    assert len(run.ensemble.members) == 2
    for member in run.ensemble.members:
        assert isinstance(member.classifier[-1], GroupedLinear)
        assert sum(p.numel() for p in member.parameters()) == count_config(config).params // 2

    written = json.loads((tmp_path / CLASS_GROUPS_NAME).read_text())
    assert written["grouping_epochs"] == 2
    for member_groups in written["class_groups"]:
        assert all(member_groups) and sorted(c for group in member_groups for c in group) == list(range(10))
    metrics = json.loads((tmp_path / METRICS_NAME).read_text())
    assert metrics["semantic"]["class_groups"] == written["class_groups"]

    saved = torch.load(tmp_path / MODEL_NAME, weights_only=True)
    images = torch.randn(3, 3, 32, 32)
    for state, member in zip(saved["members"], run.ensemble.members):
        rebuilt = build_networks(config)[0]
        rebuilt.load_state_dict(state)
        torch.testing.assert_close(rebuilt.eval()(images), member.eval()(images))


@pytest.mark.parametrize("stop_epoch", [1, 3], ids=["before-the-cut", "after-the-cut"])
@pytest.mark.parametrize("assignment", ["softmax", "reduced_gradient"])
def test_resume_continues_bit_for_bit_on_either_side_of_the_cut(tmp_path, stop_epoch, assignment):
    config = semantic_config(assignment=assignment)
    straight = trainer(config, tmp_path / "straight")
    straight.fit()

    first = trainer(config, tmp_path / "resumed", callbacks=[lambda metrics: metrics.epoch == stop_epoch])
    assert first.fit().stopped_early
    second = trainer(config, tmp_path / "resumed")
    result = second.fit(resume=True)

    assert [m.epoch for m in result.history] == [1, 2, 3, 4]
    for name, value in straight.ensemble.state_dict().items():
        assert torch.equal(value, second.ensemble.state_dict()[name]), name
    assert result.history[-1].val_accuracy == straight.history[-1].val_accuracy
    assert result.semantic["class_groups"] == straight.stage.class_groups


def test_the_assignments_learn_only_in_the_first_stage(tmp_path):
    config = semantic_config(epochs=2)
    run = trainer(config, None)
    before = {name: value.detach().clone() for name, value in run.stage.groupings.state_dict().items()}
    run.fit(test=False)
    moved = [name for name, value in run.stage.groupings.state_dict().items()
             if name.startswith("0.values") and not torch.equal(value, before[name])]
    assert moved, "the assignments did not change during the grouping stage"


def test_a_single_epoch_cuts_at_its_end_and_reports_the_split_network(tmp_path):
    result = trainer(semantic_config(epochs=1), tmp_path).fit()
    assert result.semantic is not None and len(result.history) == 1


def test_the_semantic_split_refuses_the_fused_mode():
    with pytest.raises(ValueError, match="one after another"):
        trainer(semantic_config(), None, mode="fused")


def test_a_semantic_study_starts_from_the_unsplit_network_and_reports_class_groups(tmp_path):
    from splitsearch.report import write_report
    from splitsearch.search.run import run_study
    from splitsearch.search.study import load_study_spec

    spec = load_study_spec(None, {
        "name": "semantic", "arch": "resnet20", "dataset": "synthetic:96", "space": "semantic", "epochs": 2,
        "n_trials": 3, "budget_params": "30K", "budget_mode": "fit", "pruner": "none",
        "base": {"train": {"batch_size": 32, "val_fraction": 0.25}},
    })
    study = run_study(spec, f"sqlite:///{tmp_path / 'study.db'}", runs_in(tmp_path), progress=False)
    trials = study.trials
    assert trials[0].user_attrs.get("baseline") == "undivided" and trials[0].params == {"groups": 1}
    split = [trial for trial in trials if trial.params["groups"] > 1 and trial.state.name == "COMPLETE"]
    assert split, "no semantic-split trial completed"
    for trial in split:
        assert len(trial.user_attrs["class_groups"]) == 1  # one member, its branches separated by |
        assert trial.user_attrs["class_groups"][0].count("|") == trial.params["groups"] - 1
        assert trial.user_attrs["params"] <= 30_000
    page = write_report(study, tmp_path / "report.html").read_text()
    assert "Learned class groups (semantic split)" in page and split[0].user_attrs["class_groups"][0] in page
