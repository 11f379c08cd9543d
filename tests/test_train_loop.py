import copy
import json
import math

import pytest
import torch

from splitsearch.build import build_networks
from splitsearch.config import SplitConfig, TrainConfig
from splitsearch.data import prepare_data
from splitsearch.train.loop import CHECKPOINT_NAME, METRICS_NAME, MODEL_NAME, Trainer


def tiny_config(**train) -> SplitConfig:
    settings = {"epochs": 4, "batch_size": 32, "lr": 0.05, "random_erasing": 0.5, "mixup_alpha": 0.2,
                "val_fraction": 0.2, "lr_warmup_fraction": 0.1, "cot_warmup_fraction": 0.5, **train}
    return SplitConfig(arch="resnet20", S=2, width_mult=0.25, lambda_cot=0.5, dataset="synthetic:160",
                       train=TrainConfig(**settings))


def trainer(config, out_dir, mode="auto", **kwargs) -> Trainer:
    return Trainer(config, prepare_data(config.dataset, config.train), out_dir=out_dir, mode=mode,
                   progress=False, **kwargs)


def stop_after(epoch):
    return lambda metrics: metrics.epoch == epoch


@pytest.mark.parametrize("mode", ["fused", "sequential"])
def test_resume_continues_bit_for_bit(tmp_path, mode):
    config = tiny_config()
    straight = trainer(config, tmp_path / "straight", mode)
    straight.fit()

    first = trainer(config, tmp_path / "resumed", mode, callbacks=[stop_after(2)])
    assert first.fit().stopped_early
    second = trainer(config, tmp_path / "resumed", mode)
    result = second.fit(resume=True)

    assert [m.epoch for m in result.history] == [1, 2, 3, 4]
    for name, value in straight.ensemble.state_dict().items():
        assert torch.equal(value, second.ensemble.state_dict()[name]), name
    assert result.history[-1].val_accuracy == straight.history[-1].val_accuracy


def test_ctrl_c_mid_epoch_leaves_a_checkpoint_that_resumes_exactly(tmp_path, monkeypatch):
    config = tiny_config(epochs=3)
    straight = trainer(config, tmp_path / "straight")
    straight.fit()

    interrupted = trainer(config, tmp_path / "run")
    calls = {"count": 0}
    original_step = interrupted._train_step

    def step_then_interrupt(*args):
        calls["count"] += 1
        if calls["count"] == len(interrupted.data.train) + 2:  # two steps into epoch 2
            raise KeyboardInterrupt
        return original_step(*args)

    monkeypatch.setattr(interrupted, "_train_step", step_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit()
    saved = torch.load(tmp_path / "run" / CHECKPOINT_NAME, weights_only=True)
    assert len(saved["history"]) == 1

    resumed = trainer(config, tmp_path / "run")
    resumed.fit(resume=True)
    for name, value in straight.ensemble.state_dict().items():
        assert torch.equal(value, resumed.ensemble.state_dict()[name]), name


def test_outputs_metrics_and_a_deployable_model(tmp_path):
    config = tiny_config(epochs=2, mixup_alpha=0.0)
    run = trainer(config, tmp_path)
    result = run.fit()
    metrics = json.loads((tmp_path / METRICS_NAME).read_text())
    assert metrics["config"] == config.to_dict()
    assert len(metrics["history"]) == 2 and len(metrics["val_member_accuracies"]) == 2
    assert 0 <= metrics["test_accuracy"] <= 1 and metrics["test_accuracy"] == result.test_accuracy

    saved = torch.load(tmp_path / MODEL_NAME, weights_only=True)
    rebuilt = build_networks(SplitConfig.from_dict(saved["config"]))
    for network, state in zip(rebuilt, saved["members"]):
        network.load_state_dict(state)
        network.eval()
    images = run.data.normalization(run.data.test.images[:8])
    run.ensemble.eval()
    with torch.no_grad():
        expected = run.ensemble(images.unsqueeze(0).expand(2, *images.shape).contiguous())
        for index, network in enumerate(rebuilt):
            torch.testing.assert_close(network(images), expected[index])


def test_a_callback_can_stop_training_early(tmp_path):
    seen = []
    run = trainer(tiny_config(), tmp_path, callbacks=[lambda m: seen.append(m.epoch), stop_after(1)])
    result = run.fit()
    assert result.stopped_early and seen == [1] and result.test_accuracy is None
    assert not (tmp_path / MODEL_NAME).exists()


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path):
    trainer(tiny_config(epochs=1), tmp_path).fit()
    other = trainer(tiny_config(epochs=1, lr=0.01), tmp_path)
    with pytest.raises(ValueError, match="different config"):
        other.fit(resume=True)


def test_co_training_runs_with_and_without_the_js_term(tmp_path):
    for lambda_cot in (0.0, 0.5):
        config = tiny_config(epochs=1).replace(lambda_cot=lambda_cot)
        history = trainer(config, None).fit().history
        assert (history[0].train_cotraining > 0) == (lambda_cot > 0)


@pytest.mark.parametrize(("S", "schedule"), [(1, "warmup_cosine"), (2, "warmup_cosine"), (4, "warmup_cosine"),
                                             (2, "onecycle")])
def test_a_cotraining_step_is_the_textbook_step(S, schedule):
    """One step of the trainer equals co-training written out by hand with plain PyTorch.

    Sum of the members' cross-entropies plus lambda_cot times the Jensen-Shannon divergence of
    their softmax outputs, SGD with Nesterov momentum, weight decay wd * exp(1/S - 1) on conv
    and linear weights only; the first step at the full learning rate (no warm-up), or with the
    one-cycle schedule at lr/25 and momentum 0.95 (torch's OneCycleLR start).  Augmentation is
    switched off so both sides see the same images (its per-member draws are tested in
    test_data.py).
    """
    one_cycle = schedule == "onecycle"
    config = SplitConfig(arch="resnet20", S=S, width_mult=0.25, lambda_cot=0.5, wd_rule="exp",
                         dataset="synthetic:40", train=TrainConfig(
                             epochs=10, batch_size=32, val_fraction=0.0, crop_padding=0, hflip=False,
                             lr_warmup_fraction=0.3 if one_cycle else 0.0, lr_schedule=schedule,
                             cycle_momentum=one_cycle, cot_warmup_fraction=0.0, weight_decay=5e-3))
    data = prepare_data(config.dataset, config.train)
    assert len(data.train) == 1  # the whole training split is one batch: its order cannot matter
    subject = Trainer(config, data, progress=False, callbacks=[stop_after(1)])  # one epoch: one step
    members = [copy.deepcopy(member) for member in subject.ensemble.members]
    subject.fit(test=False)

    images, labels = data.train.images, data.train.labels
    inputs = data.normalization(images)
    logits = [member(inputs) for member in members]
    loss = sum(torch.nn.functional.cross_entropy(member_logits, labels) for member_logits in logits)
    if S > 1:
        probabilities = torch.stack(logits).softmax(-1)
        entropy = lambda p: -(p * p.log()).sum(-1)  # noqa: E731
        loss = loss + 0.5 * (entropy(probabilities.mean(0)) - entropy(probabilities).mean(0)).mean()
    decayed = [module.weight for member in members for module in member.modules()
               if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear))]
    others = [p for member in members for p in member.parameters() if all(p is not d for d in decayed)]
    optimizer = torch.optim.SGD([{"params": decayed, "weight_decay": 5e-3 * math.exp(1 / S - 1)},
                                 {"params": others, "weight_decay": 0.0}],
                                lr=0.1 / 25 if one_cycle else 0.1, momentum=0.95 if one_cycle else 0.9, nesterov=True)
    loss.backward()
    optimizer.step()

    for mine, reference in zip(subject.ensemble.members, members):
        for (name, value), expected in zip(mine.state_dict().items(), reference.state_dict().values()):
            assert torch.allclose(value, expected, atol=1e-6, rtol=1e-5), name
