import pytest

from splitsearch.config import ConfigError, SplitConfig, TrainConfig


def test_yaml_round_trip_keeps_every_field(tmp_path):
    config = SplitConfig(arch="resnet20", S=2, block_factors=(1, 2, 2), wd_rule="linear", lambda_cot=0.25,
                         width_mult=1.5, dataset="cifar10", train=TrainConfig(epochs=7, lr=0.05))
    path = tmp_path / "candidate.yaml"
    path.write_text(config.to_yaml())
    assert SplitConfig.from_yaml(path) == config
    assert "block_factors: [1, 2, 2]" in path.read_text()


def test_defaults_fill_block_factors_with_ones():
    assert SplitConfig(arch="resnet20").block_factors == (1, 1, 1)
    assert SplitConfig(arch="vgg16", dataset="cifar10").block_factors == (1, 1, 1, 1, 1)


def test_export_sections_beside_the_config_are_ignored(tmp_path):
    path = tmp_path / "best.yaml"
    path.write_text("arch: resnet20\nS: 2\nprovenance: {study: s, trial: 3}\ncost: {params: 5}\n")
    assert SplitConfig.from_yaml(path).S == 2


def test_yaml_scientific_notation_without_dot_is_read_as_a_number(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("arch: resnet20\ntrain:\n  weight_decay: 5e-4\n")
    assert SplitConfig.from_yaml(path).train.weight_decay == pytest.approx(5e-4)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"arch": "resnet20", "colour": "red"}, "unknown key colour"),
        ({"arch": "resnet20", "train": {"epoch": 3}}, "unknown key train.epoch"),
        ({"arch": "nope"}, "unknown architecture 'nope'"),
        ({"arch": "resnet20", "S": 0}, "S must be a positive integer"),
        ({"arch": "resnet20", "S": "2"}, "S must be an integer"),
        ({"arch": "resnet20", "block_factors": [1, 2]}, "needs 3 entries"),
        ({"arch": "resnet20", "block_factors": [1, 0, 2]}, "positive integers"),
        ({"arch": "resnet20", "wd_rule": "cubic"}, "wd_rule must be one of none, linear, exp"),
        ({"arch": "resnet20", "lambda_cot": -1}, "lambda_cot must be >= 0"),
        ({"arch": "resnet20", "groups": 11}, "cannot exceed the 10 classes"),
        ({"arch": "resnet20", "dataset": "mnist"}, "unknown dataset 'mnist'"),
        ({"arch": "vgg16", "dataset": "digits"}, "too small for vgg16"),
        ({"arch": "resnet20", "train": {"epochs": 0}}, "train.epochs must be at least 1"),
        ({"arch": "resnet20", "train": {"nesterov": "yes"}}, "train.nesterov must be true or false"),
        ({"arch": "resnet20", "train": 5}, "train must be a mapping"),
    ],
)
def test_invalid_values_name_the_key_and_the_rule(data, message):
    with pytest.raises(ConfigError, match=message):
        SplitConfig.from_dict(data)


def test_file_errors_name_the_file(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("arch: [resnet20\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        SplitConfig.from_yaml(broken)
    with pytest.raises(ConfigError, match="cannot read"):
        SplitConfig.from_yaml(tmp_path / "missing.yaml")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("arch: resnet20\nfoo: 1\n")
    with pytest.raises(ConfigError, match=r"unknown.yaml: unknown key foo"):
        SplitConfig.from_yaml(unknown)


def test_config_hash_is_stable_and_sensitive_to_every_field():
    base = SplitConfig(arch="resnet20", S=2)
    assert base.config_hash() == SplitConfig(arch="resnet20", S=2).config_hash()
    assert base.config_hash() != base.replace(lambda_cot=0.4).config_hash()
    assert base.config_hash() != base.replace(train=TrainConfig(epochs=3)).config_hash()


def test_label_smoothing_left_unset_is_not_written_so_older_configs_keep_their_hash():
    plain = SplitConfig("resnet20", S=2)
    assert "label_smoothing" not in plain.to_dict()["train"]
    smoothed = plain.replace(train=TrainConfig(label_smoothing=0.1))
    assert smoothed.to_dict()["train"]["label_smoothing"] == 0.1
    assert SplitConfig.from_dict(smoothed.to_dict()) == smoothed and smoothed.config_hash() != plain.config_hash()
    with pytest.raises(ConfigError, match="train.label_smoothing"):
        TrainConfig(label_smoothing=1.0)
