import optuna
import pytest

from splitsearch.config import ConfigError, SplitConfig
from splitsearch.search.space import (
    SpaceError,
    check_compatible,
    config_from_params,
    describe,
    load_space,
    parameter_names,
    shipped_spaces,
    space_fingerprint,
    suggest_config,
)

BASES = {
    "resnet20-digits": SplitConfig(arch="resnet20", dataset="digits"),
    "vgg16-cifar10": SplitConfig(arch="vgg16", dataset="cifar10"),
}
NUM_BLOCKS = {"resnet20-digits": 3, "vgg16-cifar10": 5}


def write_space(tmp_path, text: str):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def asked_configs(space, base, count: int = 12):
    """``count`` (trial, config) pairs from a fresh in-memory study."""
    study = optuna.create_study(storage=None, sampler=optuna.samplers.RandomSampler(seed=0))
    pairs = []
    for _ in range(count):
        trial = study.ask()
        pairs.append((trial, suggest_config(space, trial, base)))
        study.tell(trial, 0.0)
    return pairs


S12 = "  S: {type: categorical, choices: [1, 2]}\n"


def cot_when(condition: str) -> str:
    return f"  lambda_cot: {{type: float, low: 0, high: 1, when: '{condition}'}}\n"


def test_the_four_spaces_are_shipped():
    assert shipped_spaces() == ["blocks", "divide", "full", "semantic"]


@pytest.mark.parametrize("name", ["divide", "blocks", "full", "semantic"])
@pytest.mark.parametrize("base_name", list(BASES))
def test_shipped_spaces_give_valid_configs_that_export_reproduces(name, base_name):
    space, base = load_space(name), BASES[base_name]
    assert space.name == name and space.source.name == f"{name}.yaml"
    assert describe(space).startswith(name)
    if name in ("full", "semantic") and base.arch == "vgg16":
        with pytest.raises(SpaceError, match="vgg16 has no semantic split"):
            check_compatible(space, base)  # said once, before any trial, with what to use instead
        return
    for trial, config in asked_configs(space, base):
        assert isinstance(config, SplitConfig) and config.arch == base.arch and config.dataset == base.dataset
        assert len(config.block_factors) == NUM_BLOCKS[base_name]
        assert ("lambda_cot" in trial.params) == ("wd_rule" in trial.params) == (config.S > 1)
        if config.S == 1:
            assert config.lambda_cot == base.lambda_cot
        assert config_from_params(space, trial.params, base) == config
        assert ("split_depth" in trial.params) == (config.groups > 1) or name == "semantic"


def test_full_space_reaches_semantic_splits_and_keeps_block_factors_off_them():
    configs = [config for _, config in asked_configs(load_space("full"), BASES["resnet20-digits"], count=30)]
    assert {config.groups for config in configs} == {1, 2, 4}
    assert all(config.block_factors == (1, 1, 1) for config in configs if config.groups > 1)


def test_per_block_suggests_one_factor_per_block():
    space = load_space("blocks")
    for base_name, base in BASES.items():
        trial, config = asked_configs(space, base, count=1)[0]
        blocks = NUM_BLOCKS[base_name]
        assert sorted(trial.params) == [f"block_factors.{b}" for b in range(blocks)]
        assert config.block_factors == tuple(trial.params[f"block_factors.{b}"] for b in range(blocks))
        assert config.S == 1


def test_per_block_on_some_blocks_leaves_the_others_at_one(tmp_path):
    space = load_space(write_space(tmp_path, """
name: some
params:
  block_factors: {type: per_block, choices: [2, 4], blocks: [0, 2]}
"""))
    trial, config = asked_configs(space, BASES["resnet20-digits"], count=1)[0]
    searched = ["block_factors.0", "block_factors.2"]
    assert list(trial.params) == parameter_names(space, BASES["resnet20-digits"]) == searched
    assert config.block_factors[1] == 1 and config.block_factors[0] in (2, 4)


def test_fixed_train_values_and_conditions_on_them(tmp_path):
    space = load_space(write_space(tmp_path, """
name: t
params:
  lambda_cot: {type: float, low: 0.1, high: 0.9, when: "S in [2, 4]"}
  train.weight_decay: {type: float, low: 1e-5, high: 1e-3, log: true, when: "wd_rule != none"}
  train.epochs: {type: int, low: 2, high: 10, step: 2}
fixed:
  S: 2
  wd_rule: none
  train.lr: 5e-2
"""))
    base = BASES["resnet20-digits"]
    config = config_from_params(space, {"lambda_cot": 0.25, "train.epochs": 4}, base)
    assert (config.S, config.wd_rule, config.lambda_cot) == (2, "none", 0.25)
    assert (config.train.lr, config.train.epochs) == (0.05, 4)
    assert config.train.weight_decay == base.train.weight_decay  # wd_rule is none: not searched


def test_settings_the_dataset_fills_in_can_be_searched(tmp_path):
    space = load_space(write_space(tmp_path, """
name: t
params:
  train.batch_size: {type: int, low: 16, high: 128, log: true}
  train.hflip: {type: categorical, choices: [true, false]}
fixed:
  train.crop_padding: 2
"""))
    base = BASES["resnet20-digits"]
    assert base.train.batch_size is None  # left to the dataset unless the space sets it
    config = config_from_params(space, {"train.batch_size": 48, "train.hflip": True}, base)
    assert (config.train.batch_size, config.train.hflip, config.train.crop_padding) == (48, True, 2)


def test_parameter_names_include_conditional_and_per_block_ones():
    names = ["S", "groups", "split_depth", *(f"block_factors.{b}" for b in range(3)), "wd_rule", "lambda_cot",
             "train.lr"]
    assert parameter_names(load_space("full"), BASES["resnet20-digits"]) == names


def test_conditions_see_the_base_config(tmp_path):
    space = load_space(write_space(tmp_path, "name: c\nparams:\n" + cot_when("S > 1")))
    study = optuna.create_study(storage=None)
    trial = study.ask()
    config = suggest_config(space, trial, BASES["resnet20-digits"].replace(S=2))
    assert list(trial.params) == ["lambda_cot"] and config.lambda_cot == trial.params["lambda_cot"]
    assert suggest_config(space, study.ask(), BASES["resnet20-digits"]) == BASES["resnet20-digits"]


def test_invalid_combination_raises_the_config_error(tmp_path):
    space = load_space(write_space(tmp_path, "name: g\nparams:\n  groups: {type: int, low: 1, high: 20}\n"))
    with pytest.raises(ConfigError, match="groups cannot exceed the 10 classes"):
        config_from_params(space, {"groups": 20}, BASES["resnet20-digits"])


def test_space_that_does_not_fit_the_architecture_fails_before_a_trial(tmp_path):
    space = load_space(write_space(tmp_path, "name: b\nparams:\n"
                                   "  block_factors: {type: per_block, choices: [1, 2], blocks: [4]}\n"))
    check_compatible(space, BASES["vgg16-cifar10"])
    with pytest.raises(SpaceError, match=r"space\.yaml: block_factors: blocks \[4\] out of range, resnet20"):
        check_compatible(space, BASES["resnet20-digits"])
    densenet = SplitConfig(arch="densenet_bc190", dataset="cifar10")
    with pytest.raises(SpaceError, match="densenet_bc190 does not support block-wise splitting"):
        suggest_config(load_space("blocks"), optuna.trial.FixedTrial({}), densenet)


@pytest.mark.parametrize(
    ("params", "key", "reason"),
    [
        ("  colour: {type: categorical, choices: [red]}\n", "colour", "unknown config key"),
        ("  S: {type: normal, choices: [1]}\n", "S", "unknown type 'normal'"),
        ("  S: {type: int, low: 1}\n", "S", "needs low and high"),
        ("  S: {type: int, low: 4, high: 1}\n", "S", "low 4 > high 1"),
        ("  S: {type: categorical, choices: []}\n", "S", "choices must be a non-empty list"),
        ("  block_factors: {type: per_block, choices: []}\n", "block_factors", "non-empty list"),
        ("  train.lr: {type: float, low: 0, high: 1, log: true}\n", "train.lr", "log needs low > 0"),
        ("  S: {type: int, low: 1, high: 4, lwo: 2}\n", "S", "unknown field 'lwo'"),
        ("  S: {type: float, low: 1, high: 4}\n", "S", "type float cannot give S"),
        ("  wd_rule: {type: categorical, choices: [none, cubic]}\n", "wd_rule", "choice 'cubic'"),
        (S12 + cot_when("S >"), "lambda_cot", "bad when 'S >'"),
        (cot_when("S is 2"), "lambda_cot", "bad when"),
        (cot_when("colour > 1"), "lambda_cot", "unknown key 'colour'"),
        (cot_when("wd_rule > none"), "lambda_cot", "> needs a numeric key"),
        (cot_when("wd_rule != nothing"), "lambda_cot", "value 'nothing' is not one of none, linear, exp"),
        (cot_when("S > 1") + S12, "lambda_cot", "refers to S, which is not searched before"),
        (cot_when("lambda_cot > 0"), "lambda_cot", "refers to lambda_cot, which is not searched before"),
        (S12 + "fixed:\n  S: 2\n", "S", "both searched and fixed"),
        (S12 + "fixed:\n  wd_rule: 3\n", "wd_rule", "fixed value 3 is not one of none, linear, exp"),
        (S12 + "fixed:\n  train.epochs: ten\n", "train.epochs", "fixed value 'ten' is not an integer"),
        (S12 + "fixed:\n  arch: vgg16\n", "arch", "unknown config key"),
        ("", "params", "must be a non-empty mapping"),
        ("  S: {type: categorical, choices: [1, 2]\n", "line", "not valid YAML"),
    ],
)
def test_invalid_spaces_fail_at_load_with_file_key_and_reason_on_one_line(tmp_path, params, key, reason):
    path = write_space(tmp_path, "name: x\nparams:\n" + params)
    with pytest.raises(SpaceError) as info:
        load_space(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert key in message and reason in message


def test_missing_file_and_unknown_bare_name(tmp_path):
    with pytest.raises(SpaceError, match=r"nope\.yaml: cannot read"):
        load_space(tmp_path / "nope.yaml")
    with pytest.raises(SpaceError, match=r"nope: no such search space file.*shipped: blocks, divide, full"):
        load_space("nope")


def test_fingerprint_follows_the_content_not_the_formatting(tmp_path):
    def fingerprint(text: str) -> str:
        return space_fingerprint(load_space(write_space(tmp_path, text)))

    base = fingerprint("name: a\nparams:\n" + S12 + cot_when("S > 1"))
    reformatted = ("# renamed and reformatted\nname: b\ndescription: same space\nparams:\n"
                   "  S:\n    type: categorical\n    choices: [1, 2]\n"
                   "  lambda_cot: {type: float, low: 0.0, high: 1.0, when: 'S>1'}\n")
    assert fingerprint(reformatted) == base
    s124 = "  S: {type: categorical, choices: [1, 2, 4]}\n"
    assert fingerprint("name: a\nparams:\n" + s124 + cot_when("S > 1")) != base
    assert fingerprint("name: a\nparams:\n" + S12 + cot_when("S > 2")) != base
    assert fingerprint("name: a\nparams:\n" + S12 + cot_when("S > 1") + "fixed:\n  train.epochs: 5\n") != base
    assert fingerprint("name: a\nparams:\n" + cot_when("S > 1")) != base
