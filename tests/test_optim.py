import math

import pytest
import torch
from torch import nn

from splitsearch.build import build_networks
from splitsearch.config import SplitConfig, TrainConfig
from splitsearch.train.optim import divided_weight_decay, make_optimizer, make_scheduler, parameter_groups


@pytest.mark.parametrize(
    ("rule", "S", "expected"),
    [("none", 4, 5e-4), ("linear", 4, 1.25e-4), ("exp", 4, 5e-4 * math.exp(-0.75)), ("exp", 1, 5e-4),
     ("linear", 1, 5e-4)],
)
def test_weight_decay_rules(rule, S, expected):
    assert divided_weight_decay(5e-4, rule, S) == pytest.approx(expected)


def test_unknown_rule_is_an_error():
    with pytest.raises(ValueError, match="unknown weight-decay rule"):
        divided_weight_decay(5e-4, "cubic", 2)


def test_decay_lands_only_on_conv_and_linear_weights():
    network = build_networks(SplitConfig(arch="resnet20", width_mult=0.25))[0]
    decayed, plain = parameter_groups(network, 1e-3)
    expected = {id(m.weight) for m in network.modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert {id(p) for p in decayed["params"]} == expected
    assert decayed["weight_decay"] == 1e-3 and plain["weight_decay"] == 0.0
    bn_and_biases = {id(p) for m in network.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters()}
    assert bn_and_biases and bn_and_biases <= {id(p) for p in plain["params"]}
    assert len(decayed["params"]) + len(plain["params"]) == len(list(network.parameters()))


def test_an_sgd_step_with_zero_gradient_shrinks_only_decayed_weights():
    config = SplitConfig(arch="resnet20", S=2, width_mult=0.25, wd_rule="linear",
                         train=TrainConfig(lr=0.1, weight_decay=0.01, momentum=0.0))
    network = build_networks(config)[0]
    for module in network.modules():
        if isinstance(module, nn.BatchNorm2d):
            nn.init.constant_(module.weight, 0.7)  # non-zero so a wrong decay would show
    before = {name: p.detach().clone() for name, p in network.named_parameters()}
    optimizer = make_optimizer(network, config.train, config.wd_rule, config.S)
    for parameter in network.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()
    decayed = {id(p) for p in parameter_groups(network, 1.0)[0]["params"]}
    for name, parameter in network.named_parameters():
        if id(parameter) in decayed:
            # p <- p - lr * (wd / S) * p
            torch.testing.assert_close(parameter, before[name] * (1 - 0.1 * 0.01 / 2))
        else:
            assert torch.equal(parameter, before[name]), name


def test_optimizer_is_nesterov_sgd_with_the_divided_decay():
    network = nn.Conv2d(3, 4, 3)
    optimizer = make_optimizer(network, TrainConfig(weight_decay=4e-4), "exp", 2)
    assert optimizer.defaults["nesterov"] is True and optimizer.defaults["momentum"] == 0.9
    assert optimizer.param_groups[0]["weight_decay"] == pytest.approx(4e-4 * math.exp(-0.5))


def test_schedule_warms_up_linearly_then_decays_by_cosine():
    parameter = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    scheduler = make_scheduler(optimizer, total_steps=100, train=TrainConfig(lr_warmup_fraction=0.1))
    rates = []
    for _ in range(100):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(0.01) and rates[9] == pytest.approx(0.1)
    assert rates[10] == pytest.approx(0.1)
    assert rates[55] == pytest.approx(0.05, rel=0.02)  # half-way through the cosine
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))
    assert rates[-1] < 0.001


def _rates_and_momenta(scheduler, optimizer, steps):
    rates, momenta = [], []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        momenta.append(optimizer.param_groups[0]["momentum"])
        optimizer.step()
        scheduler.step()
    return rates, momenta


def test_one_cycle_schedule_is_torchs_one_cycle_with_its_momentum_swing():
    """lr from lr/25 up to lr at pct_start, then down to lr/25e4; momentum 0.95 -> 0.85 -> 0.95."""
    parameter = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.1, momentum=0.9, nesterov=True)
    train = TrainConfig(lr_schedule="onecycle", cycle_momentum=True, lr_warmup_fraction=0.15)
    rates, momenta = _rates_and_momenta(make_scheduler(optimizer, 100, train), optimizer, 100)
    peak = max(range(100), key=rates.__getitem__)
    assert rates[0] == pytest.approx(0.1 / 25) and peak == 14 and rates[peak] == pytest.approx(0.1)
    assert rates[-1] < 1e-4 and all(a >= b for a, b in zip(rates[peak:], rates[peak + 1:]))
    assert momenta[0] == pytest.approx(0.95) and momenta[peak] == pytest.approx(0.85)
    assert momenta[-1] == pytest.approx(0.95, abs=1e-3)


def test_one_cycle_leaves_momentum_alone_unless_asked_and_continues_at_a_later_step():
    def schedule(first_step=0):
        optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
        train = TrainConfig(lr_schedule="onecycle", lr_warmup_fraction=0.3)
        return _rates_and_momenta(make_scheduler(optimizer, 50, train, first_step=first_step), optimizer,
                                  50 - first_step)

    rates, momenta = schedule()
    assert set(momenta) == {0.9}
    later, _ = schedule(first_step=20)
    assert later == pytest.approx(rates[20:])


def test_momentum_cycling_needs_the_one_cycle_schedule():
    with pytest.raises(ValueError, match="train.cycle_momentum"):
        TrainConfig(cycle_momentum=True)
    with pytest.raises(ValueError, match="train.momentum"):
        TrainConfig(lr_schedule="onecycle", cycle_momentum=True, momentum=0.97)
