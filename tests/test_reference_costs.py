"""Every seed 004 Table 2 row whose family exists, counted and compared with the paper."""

import json

import pytest

from splitsearch.cli import main
from splitsearch.config import SplitConfig
from splitsearch.cost.counting import count_config
from splitsearch.cost.published import TABLE2_CIFAR100

# 2 % is the acceptance tolerance of the zoo.  The paper prints MACs in G with two decimals
# (0.17G, 0.20G) and small parameter counts in M with two decimals, so a printed figure is only
# known to half a unit of its last digit; where that is wider than 2 % (the small ResNets' MACs)
# it is the tolerance: the counted value must round to the printed one.
TOLERANCE = 0.02
MACS_PRINTED_UNIT = 0.01e9
PARAMS_PRINTED_UNIT = 0.01e6


def _tolerance(reference: float, printed_unit: float) -> float:
    return max(TOLERANCE * reference, printed_unit / 2)

# Rows that cannot reach the tolerance with the authors' public architecture, and why.
KNOWN_PARAM_GAPS = {
    ("se_resnet110", 4): (
        "1.744M counted vs 1.70M printed (+2.6%): the authors' public SE-ResNet-110 (base width 8, SE "
        "reduction 4, biased 1x1 convs) has 1.744M, and the plain ResNet-110 at S=4 matches (1.214M vs "
        "1.21M), so the paper's SE share at S>1 comes from a variant not in the public code"
    ),
}


def _cases():
    for row in TABLE2_CIFAR100:
        reason = KNOWN_PARAM_GAPS.get((row.arch, row.S))
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        yield pytest.param(row, marks=marks, id=f"{row.arch}-S{row.S}")


@pytest.fixture(scope="module")
def paper_costs():
    cache = {}

    def cost(row):
        if row not in cache:
            cache[row] = count_config(SplitConfig(arch=row.arch, S=row.S, dataset="cifar100"), convention="paper")
        return cache[row]

    return cost


@pytest.mark.parametrize("row", _cases())
def test_params_match_table_2(row, paper_costs):
    assert paper_costs(row).params == pytest.approx(row.params, abs=_tolerance(row.params, PARAMS_PRINTED_UNIT))


@pytest.mark.parametrize("row", TABLE2_CIFAR100, ids=lambda row: f"{row.arch}-S{row.S}")
def test_macs_counted_as_the_authors_did_match_table_2(row, paper_costs):
    assert paper_costs(row).macs == pytest.approx(row.macs, abs=_tolerance(row.macs, MACS_PRINTED_UNIT))


def test_wide_networks_match_with_pytorch_counting_too():
    # Batch norm and pooling are a negligible share of wide networks: both conventions agree.
    for row in TABLE2_CIFAR100:
        if row.arch.startswith(("wrn", "resnext")) and row.S == 4:
            cost = count_config(SplitConfig(arch=row.arch, S=row.S, dataset="cifar100"))
            assert cost.macs == pytest.approx(row.macs, rel=TOLERANCE)


def test_cli_json_reports_wrn28_10_s4(capsys):
    assert main(["count", "--arch", "wrn28_10", "-S", "4", "--dataset", "cifar100", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["params"] == pytest.approx(36.7e6, rel=TOLERANCE)
    assert data["macs"] == pytest.approx(5.28e9, rel=TOLERANCE)
    assert data["macs_convention"] == "pytorch"
