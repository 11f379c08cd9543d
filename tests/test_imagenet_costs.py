"""Seed 004's Table 4 ImageNet networks: counted as the authors did and compared with the paper."""

import json

import pytest
import torch

from splitsearch.build import build_one
from splitsearch.cli import main
from splitsearch.config import ConfigError, SplitConfig
from splitsearch.cost.counting import count_config
from splitsearch.cost.published import TABLE4_IMAGENET

# The zoo's acceptance tolerance.  Table 4 prints parameters in M with one decimal and MACs in G
# with one decimal, so a printed figure is known to better than 2 % for every row here.
TOLERANCE = 0.02


def _config(row, **changes) -> SplitConfig:
    return SplitConfig(arch=row.arch, S=row.S, dataset="imagenet", crop=row.crop, **changes)


@pytest.fixture(scope="module")
def paper_costs():
    cache = {}

    def cost(row):
        if row not in cache:
            cache[row] = count_config(_config(row), convention="paper")
        return cache[row]

    return cost


@pytest.mark.parametrize("row", TABLE4_IMAGENET, ids=lambda row: f"{row.arch}-S{row.S}-{row.crop}")
def test_params_match_table_4(row, paper_costs):
    assert paper_costs(row).params == pytest.approx(row.params, rel=TOLERANCE)


@pytest.mark.parametrize("row", TABLE4_IMAGENET, ids=lambda row: f"{row.arch}-S{row.S}-{row.crop}")
def test_macs_counted_as_the_authors_did_match_table_4(row, paper_costs):
    assert paper_costs(row).macs == pytest.approx(row.macs, rel=TOLERANCE)


@pytest.mark.parametrize("arch, S, crop, params, macs", [
    ("wrn50_2", 2, None, 51.4e6, 10.9e9),
    ("efficientnet_b7", 2, 320, 68.2e6, 10.5e9),
    ("se_resnext101_64x4d", 2, 416, 98.0e6, 61.1e9),
])
def test_cli_json_counts_table_4_rows(capsys, arch, S, crop, params, macs):
    args = ["count", "--arch", arch, "-S", str(S), "--dataset", "imagenet", "--macs-convention", "paper", "--json"]
    assert main(args + (["--crop", str(crop)] if crop else [])) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["params"] == pytest.approx(params, rel=TOLERANCE)
    assert data["macs"] == pytest.approx(macs, rel=TOLERANCE)
    assert data["config"].get("crop") == crop


def test_crop_sets_the_counted_input_size():
    # Convolutions dominate: MACs grow with the pixel count, parameters do not change.
    at_224 = count_config(SplitConfig(arch="resnet50", dataset="imagenet"))
    at_448 = count_config(SplitConfig(arch="resnet50", dataset="imagenet", crop=448))
    assert at_448.params == at_224.params
    assert at_448.macs / at_224.macs == pytest.approx(4, rel=0.01)


@pytest.mark.parametrize("S, base", [(1, 64), (2, 44), (4, 32)])
def test_resnet50_base_width_divided(S, base):
    with torch.device("meta"):
        network = build_one(SplitConfig(arch="resnet50", S=S, dataset="imagenet"))
    assert network.stem[0][0].out_channels == base
    assert network.stages[3][-1].conv3.out_channels == 32 * base


@pytest.mark.parametrize("arch, S, mid", [
    ("wrn50_2", 1, 128), ("wrn50_2", 2, 64), ("wrn50_3", 2, 128), ("wrn50_2", 4, 64),
    ("resnext101_64x4d", 1, 256), ("resnext101_64x4d", 2, 128),
])
def test_first_bottleneck_width_follows_the_authors_division(arch, S, mid):
    with torch.device("meta"):
        network = build_one(SplitConfig(arch=arch, S=S, dataset="imagenet"))
    assert network.stages[0][0].conv1.out_channels == mid


def test_cifar_names_stay_cifar():
    # resnet20 and wrn28_10 are the CIFAR networks; resnet50 and wrn50_2 the ImageNet ones.
    with torch.device("meta"):
        cifar = build_one(SplitConfig(arch="resnet20", dataset="cifar10"))
        imagenet = build_one(SplitConfig(arch="resnet50", dataset="cifar10"))
    assert len(cifar.stages) == 3 and len(imagenet.stages) == 4


@pytest.mark.parametrize("arch", ["resnet50", "wrn50_2", "resnext101_64x4d", "se_resnext101_64x4d",
                                  "efficientnet_b7"])
def test_tiny_forward_at_a_small_crop(arch):
    config = SplitConfig(arch=arch, S=2, dataset="imagenet", crop=64, width_mult=0.125)
    torch.manual_seed(0)
    network = build_one(config).eval()
    with torch.inference_mode():
        logits = network(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 1000) and torch.isfinite(logits).all()


def test_block_split_of_an_imagenet_resnet_saves_parameters():
    whole = count_config(SplitConfig(arch="wrn50_2", dataset="imagenet"))
    split = count_config(SplitConfig(arch="wrn50_2", dataset="imagenet", block_factors=(1, 2, 2, 4)))
    assert split.params < whole.params and split.macs < whole.macs


def test_efficientnet_b7_refuses_block_split():
    with pytest.raises(ValueError, match="efficientnet_b7"):
        build_one(SplitConfig(arch="efficientnet_b7", dataset="imagenet", block_factors=(1, 2, 1, 1, 1, 1, 1)))


def test_crop_is_refused_by_fixed_size_datasets(capsys):
    with pytest.raises(ConfigError, match="cifar100 has fixed 32x32 images"):
        SplitConfig(arch="wrn16_8", dataset="cifar100", crop=64)
    assert main(["count", "--arch", "wrn16_8", "--dataset", "cifar100", "--crop", "64"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "crop 64" in err and "Traceback" not in err


def test_crop_too_small_for_the_network():
    with pytest.raises(ConfigError, match="too small for resnet50"):
        SplitConfig(arch="resnet50", dataset="imagenet", crop=16)


def test_crop_round_trips_and_leaves_uncropped_hashes_alone(tmp_path):
    plain = SplitConfig(arch="resnet50", dataset="imagenet")
    assert "crop" not in plain.to_dict()
    cropped = plain.replace(crop=320)
    path = tmp_path / "cfg.yaml"
    path.write_text(cropped.to_yaml())
    assert SplitConfig.from_yaml(path) == cropped
    assert cropped.config_hash() != plain.config_hash()


def test_training_defaults_follow_the_crop(capsys):
    # The random-crop padding is 1/8 of the input side: 40 pixels at 320, not 224's 28.
    assert main(["count", "--arch", "resnet50", "--dataset", "imagenet", "--crop", "320"]) == 0
    out = capsys.readouterr().out
    assert "crop=320" in out and "crop_padding=40" in out


def test_archs_says_what_each_imagenet_family_supports(capsys):
    assert main(["archs"]) == 0
    lines = {line.split()[0].rstrip(","): line for line in capsys.readouterr().out.splitlines()}
    for arch in ("resnet50", "wrn50_2", "resnext101_64x4d", "se_resnext101_64x4d"):
        assert "splits: S, K_b" in lines[arch] and "fused: yes" in lines[arch]
    assert "K_b" not in lines["efficientnet_b7"] and "fused: no" in lines["efficientnet_b7"]


def test_fit_keeps_the_crop_in_the_fitted_config(capsys):
    # MACs grow with the crop, so the same MACs budget fits a narrower network at a larger crop.
    widths = {}
    for crop in (64, 128):
        assert main(["fit", "--arch", "resnet50", "--dataset", "imagenet", "--crop", str(crop),
                     "--budget-macs", "0.3G", "--json"]) == 0
        config = json.loads(capsys.readouterr().out)["config"]
        assert config["crop"] == crop
        widths[crop] = config["width_mult"]
    assert widths[128] < widths[64]


@pytest.mark.parametrize("S, stem, head", [(1, 64, 2560), (2, 48, 1840), (4, 32, 1280)])
def test_efficientnet_b7_widths_scale_the_divided_b0_table(S, stem, head):
    with torch.device("meta"):
        network = build_one(SplitConfig(arch="efficientnet_b7", S=S, dataset="imagenet"))
    assert network.features[0][0].out_channels == stem
    assert network.classifier[-1].in_features == head
