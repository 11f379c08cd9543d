import math

import pytest
import torch
import torch.nn.functional as F

from splitsearch.ensemble import combine_logits
from splitsearch.train.losses import cot_weight, cotraining_loss, js_divergence


def test_js_divergence_equals_the_mean_kl_to_the_mixture():
    # H(m) - mean_i H(p_i) = mean_i KL(p_i || m): an independent way to compute the same number.
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 7, dtype=torch.float64)
    p = logits.softmax(-1)
    m = p.mean(0)
    direct = (p * (p.log() - m.log())).sum(-1).mean(0).mean()
    assert js_divergence(logits).item() == pytest.approx(direct.item(), rel=1e-5)


def test_js_divergence_is_zero_for_identical_members_and_positive_otherwise():
    logits = torch.randn(1, 4, 10).repeat(3, 1, 1)
    assert js_divergence(logits).item() == pytest.approx(0.0, abs=1e-6)
    assert js_divergence(torch.randn(3, 4, 10)).item() > 0


def test_cotraining_loss_is_member_ce_sum_plus_weighted_js():
    torch.manual_seed(1)
    logits = torch.randn(2, 6, 5, requires_grad=True)
    targets = torch.randint(0, 5, (6,))
    loss = cotraining_loss(logits, targets, lambda_cot=0.5)
    expected_ce = F.cross_entropy(logits[0], targets) + F.cross_entropy(logits[1], targets)
    assert loss.cross_entropy.item() == pytest.approx(expected_ce.item(), rel=1e-6)
    assert loss.total.item() == pytest.approx((expected_ce + 0.5 * js_divergence(logits)).item(), rel=1e-6)
    loss.total.backward()
    assert logits.grad.abs().sum() > 0


def test_label_smoothing_smooths_each_members_cross_entropy_and_not_the_agreement_term():
    torch.manual_seed(2)
    logits = torch.randn(2, 6, 5)
    targets = torch.randint(0, 5, (6,))
    smoothed = cotraining_loss(logits, targets, lambda_cot=0.5, label_smoothing=0.1)
    # Smoothing 0.1 over K classes: 0.9 + 0.1/K on the target, 0.1/K elsewhere, written out by hand.
    soft = torch.full((6, 5), 0.1 / 5).scatter(1, targets[:, None], 0.9 + 0.1 / 5)
    expected = sum(-(soft * member.log_softmax(-1)).sum(-1).mean() for member in logits)
    assert smoothed.cross_entropy.item() == pytest.approx(expected.item(), rel=1e-5)
    plain = cotraining_loss(logits, targets, lambda_cot=0.5)
    assert smoothed.cotraining.item() == pytest.approx(plain.cotraining.item())
    assert smoothed.cross_entropy.item() != pytest.approx(plain.cross_entropy.item())


def test_single_network_has_no_cotraining_term():
    loss = cotraining_loss(torch.randn(1, 4, 3), torch.tensor([0, 1, 2, 0]), lambda_cot=0.5)
    assert loss.cotraining.item() == 0
    assert loss.total.item() == pytest.approx(loss.cross_entropy.item())


def test_mixup_targets_mix_the_cross_entropy():
    logits = torch.randn(2, 4, 3)
    y_a, y_b = torch.tensor([0, 1, 2, 0]), torch.tensor([1, 1, 0, 2])
    mixed = cotraining_loss(logits, y_a, 0.0, mixed_targets=y_b, mix_weight=0.3)
    plain_a = cotraining_loss(logits, y_a, 0.0).cross_entropy
    plain_b = cotraining_loss(logits, y_b, 0.0).cross_entropy
    assert mixed.cross_entropy.item() == pytest.approx((0.3 * plain_a + 0.7 * plain_b).item(), rel=1e-6)


@pytest.mark.parametrize(
    ("lambda_cot", "progress", "warmup", "expected"),
    [
        (0.5, 0.0, 40 / 300, 0.005),  # floored, as the authors' code
        (0.5, 20 / 300, 40 / 300, 0.25),  # halfway through the warm-up
        (0.5, 40 / 300, 40 / 300, 0.5),
        (0.5, 0.9, 40 / 300, 0.5),
        (0.5, 0.0, 0.0, 0.5),  # no warm-up
        (0.0, 0.01, 40 / 300, 0.0),  # off stays off
        (0.001, 0.0, 40 / 300, 0.001),  # the floor never exceeds lambda itself
    ],
)
def test_cot_weight_warms_up_linearly(lambda_cot, progress, warmup, expected):
    assert cot_weight(lambda_cot, progress, warmup) == pytest.approx(expected)


def test_combine_rules():
    logits = torch.tensor([[[1.0, 3.0]], [[2.0, 0.0]]])  # S=2, B=1, K=2
    assert torch.equal(combine_logits(logits, "mean_logits"), torch.tensor([[1.5, 1.5]]))
    assert torch.equal(combine_logits(logits, "max_logits"), torch.tensor([[2.0, 3.0]]))
    probabilities = combine_logits(logits, "mean_softmax").exp()
    assert probabilities.sum().item() == pytest.approx(1.0)
    assert probabilities[0, 1].item() == pytest.approx((1 / (1 + math.e**-2) + 1 / (1 + math.e**2)) / 2)
    with pytest.raises(ValueError, match="unknown combine rule"):
        combine_logits(logits, "vote")
