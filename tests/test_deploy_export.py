"""``splitsearch deploy``: one TorchScript or ONNX file that reproduces the ensemble's combined logits.

The reference logits are computed here, independently of the command's own check: the members
rebuilt from the weights file, the training split's normalisation, the config's combination rule.
The ResNet-20 weights come from a real (one-epoch) training through the command line, so the file
format is the one ``train`` writes and ``export --weights`` hands out.  (``tests/test_deploy.py``
is about the cluster files in ``deploy/``, not this command.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from splitsearch.build import build_args, build_networks, semantic_plan
from splitsearch.config import SplitConfig
from splitsearch.data import prepare_data
from splitsearch.data.device import Normalization
from splitsearch.data.loading import load_dataset
from splitsearch.deploy import DeployedEnsemble, training_normalization
from splitsearch.ensemble import combine_logits
from splitsearch.models import build_network
from splitsearch.split.semantic import split_network

from conftest import run_cli as run

# The tests load the TorchScript files the way a user does, with torch.jit.load, deprecated since torch
# 2.14 (splitsearch.deploy._silence_torchscript_notes says why the format stays TorchScript).
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")

ONNX_REASON = "the ONNX route needs the deploy extra: pip install 'splitsearch[deploy]'"
# The command's bound (README, --help): max |difference| <= 1e-4 * max(1, max |logit|).
RELATIVE_TOLERANCE = 1e-4


def _write_config(path: Path, config: SplitConfig) -> Path:
    path.write_text(config.to_yaml())
    return path


@pytest.fixture(scope="module")
def trained_resnet20(tmp_path_factory) -> tuple[Path, Path]:
    """(YAML, model.pt) of an S=2 ResNet-20 trained one epoch on digits by ``splitsearch train``."""
    from splitsearch.cli import main

    folder = tmp_path_factory.mktemp("resnet20")
    config = SplitConfig(arch="resnet20", S=2, width_mult=0.25, dataset="digits")
    config_file = _write_config(folder / "best.yaml", config)
    assert main(["train", str(config_file), "--epochs", "1", "--device", "cpu", "--out", str(folder / "run"),
                 "--quiet"]) == 0
    return config_file, folder / "run" / "model.pt"


def _members(config: SplitConfig, weights: Path) -> list[torch.nn.Module]:
    networks = build_networks(config)
    for network, state in zip(networks, torch.load(weights, weights_only=True)["members"]):
        network.load_state_dict(state)
        network.eval()
    return networks


def _reference(config: SplitConfig, weights: Path, images: torch.Tensor) -> torch.Tensor:
    """The ensemble's combined logits as evaluation computes them."""
    stored = torch.load(weights, weights_only=True)["normalization"]
    normalized = Normalization(tuple(stored["mean"]), tuple(stored["std"]))(images)
    with torch.no_grad():
        logits = torch.stack([network(normalized) for network in _members(config, weights)])
    return combine_logits(logits, config.train.combine)


def _run_file(path: Path, images: torch.Tensor) -> torch.Tensor:
    if path.suffix == ".onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: images.numpy()})[0])
    with torch.no_grad():
        return torch.jit.load(str(path))(images)


def _assert_reproduces(path: Path, config: SplitConfig, weights: Path, images: torch.Tensor) -> None:
    expected = _reference(config, weights, images)
    produced = _run_file(path, images)
    assert produced.shape == expected.shape
    assert (produced - expected).abs().max().item() <= RELATIVE_TOLERANCE * max(1.0, expected.abs().max().item())


def _test_images(config: SplitConfig, count: int) -> torch.Tensor:
    """Real images the command's check did not use (it takes the first test images)."""
    return load_dataset(config.dataset).test.images[-count:].contiguous()


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_an_s2_resnet20_deploys_to_one_file_that_reproduces_the_ensemble(trained_resnet20, tmp_path, capsys, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime", reason=ONNX_REASON)
    config_file, weights = trained_resnet20
    config = SplitConfig.from_yaml(config_file)
    output = tmp_path / ("model.onnx" if fmt == "onnx" else "model.pt")
    code, out, err = run(capsys, "deploy", config_file, "--weights", weights, "--format", fmt, "-o", output,
                         "--batch-size", 8)
    assert code == 0, err
    assert f"written to {output}" in out and "checked on 8 test images" in out
    # Another batch size than the check's: the batch axis of the file is free.
    _assert_reproduces(output, config, weights, _test_images(config, 5))


def test_model_pt_keeps_the_training_normalisation_which_deploy_falls_back_to_recomputing(trained_resnet20):
    config_file, weights = trained_resnet20
    config = SplitConfig.from_yaml(config_file)
    contents = torch.load(weights, weights_only=True)
    training_split = prepare_data(config.dataset, config.train).normalization
    stored = training_normalization(contents, config, Path("unused"))
    without = training_normalization({key: value for key, value in contents.items() if key != "normalization"},
                                     config, Path("unused"))
    assert stored == without
    assert stored.mean == pytest.approx(training_split.mean) and stored.std == pytest.approx(training_split.std)


def _vgg16_weights(folder: Path) -> tuple[Path, Path, SplitConfig]:
    """A block-split VGG16 (random weights, BN statistics made non-trivial), saved as training saves model.pt."""
    config = SplitConfig(arch="vgg16", block_factors=(2, 2, 1, 1, 2), width_mult=0.125, dataset="synthetic:40")
    torch.manual_seed(0)
    networks = build_networks(config)
    for network in networks:
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 2.0)
    weights = folder / "model.pt"
    torch.save({"config": config.to_dict(), "members": [network.state_dict() for network in networks],
                "normalization": {"mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3]}}, weights)
    return _write_config(folder / "vgg.yaml", config), weights, config


# The ONNX case exports VGG16 through torch.export (about 10 s of CPU on its own): run with -m slow.
@pytest.mark.parametrize("fmt", ["torchscript", pytest.param("onnx", marks=pytest.mark.slow)])
def test_a_block_split_vgg16_deploys_branch_by_branch(tmp_path, capsys, fmt):
    if fmt == "onnx":
        onnx = pytest.importorskip("onnx", reason=ONNX_REASON)
        pytest.importorskip("onnxruntime", reason=ONNX_REASON)
    config_file, weights, config = _vgg16_weights(tmp_path)
    assert any(getattr(module, "groups", 1) > 1 for module in build_networks(config)[0].modules())
    output = tmp_path / ("vgg.onnx" if fmt == "onnx" else "vgg.pt")
    code, out, err = run(capsys, "deploy", config_file, "--weights", weights, "--format", fmt, "--branchwise",
                         "-o", output)
    assert code == 0, err
    _assert_reproduces(output, config, weights, _test_images(config, 3))
    # Branch by branch: the split blocks' grouped convolutions became one slim convolution per branch.
    if fmt == "onnx":
        groups = [attribute.i for node in onnx.load(str(output)).graph.node if node.op_type == "Conv"
                  for attribute in node.attribute if attribute.name == "group"]
        assert groups and all(group == 1 for group in groups)
    else:
        names = [name for name, _ in torch.jit.load(str(output)).named_modules()]
        assert any(name.endswith("branches.1") for name in names)


def test_a_semantic_split_deploys_with_its_learned_class_order(tmp_path, capsys):
    """G=2: a cut along a shuffled grouping (what training learns) keeps its permutations in the file."""
    config = SplitConfig(arch="resnet20", S=2, groups=2, split_depth="shallow", width_mult=0.25, dataset="digits")
    generator = torch.Generator().manual_seed(1)
    members = []
    for _ in range(config.S):
        unsplit = build_network(config.arch, build_args(config))
        plan = semantic_plan(config, unsplit)
        assignment = {name: torch.arange(node_set.size) % node_set.groups for name, node_set in plan.node_sets.items()}
        assignment = {name: groups[torch.randperm(len(groups), generator=generator)]
                      for name, groups in assignment.items()}
        members.append(split_network(unsplit, plan, assignment).state_dict())
    assert any(not torch.equal(state[key], torch.arange(len(state[key])))
               for state in members for key in state if key.endswith("class_position"))
    weights = tmp_path / "model.pt"
    torch.save({"config": config.to_dict(), "members": members,
                "normalization": {"mean": [0.3], "std": [0.4]}}, weights)
    config_file = _write_config(tmp_path / "semantic.yaml", config)
    output = tmp_path / "semantic.pt"
    code, _, err = run(capsys, "deploy", config_file, "--weights", weights, "--format", "torchscript", "-o", output)
    assert code == 0, err
    _assert_reproduces(output, config, weights, _test_images(config, 4))


def test_a_fused_deployment_packs_the_members_and_reproduces_them(trained_resnet20, tmp_path, capsys):
    config_file, weights = trained_resnet20
    output = tmp_path / "fused.pt"
    code, _, err = run(capsys, "deploy", config_file, "--weights", weights, "--format", "torchscript", "--fused",
                       "-o", output)
    assert code == 0, err
    _assert_reproduces(output, SplitConfig.from_yaml(config_file), weights,
                       _test_images(SplitConfig.from_yaml(config_file), 6))
    # One packed network (FusedEnsemble.network), not the members one by one (SequentialEnsemble.networks).
    keys = list(torch.jit.load(str(output)).state_dict())
    assert any(key.startswith("ensemble.network.") for key in keys)
    assert not any(key.startswith("ensemble.networks.") for key in keys)


def test_a_file_that_computes_other_logits_is_refused_and_not_kept(trained_resnet20, tmp_path, capsys, monkeypatch):
    forward = DeployedEnsemble.forward
    monkeypatch.setattr(DeployedEnsemble, "forward", lambda self, images: forward(self, images) * 1.01)
    config_file, weights = trained_resnet20
    output = tmp_path / "wrong.pt"
    output.write_bytes(b"a deployment from before")
    code, out, err = run(capsys, "deploy", config_file, "--weights", weights, "--format", "torchscript", "-o", output)
    assert code == 2 and out == ""
    assert err.startswith("Error: the torchscript file's logits differ by up to") and err.count("\n") == 1
    assert f"nothing was written to {output}" in err
    assert output.read_bytes() == b"a deployment from before" and list(tmp_path.iterdir()) == [output]


def _one_line_error(capsys, *argv: object) -> str:
    code, out, err = run(capsys, "deploy", *argv)
    assert code == 2 and out == ""
    assert err.startswith("Error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_weights_of_another_file_or_config_are_one_line_errors(trained_resnet20, tmp_path, capsys):
    config_file, weights = trained_resnet20
    config = SplitConfig.from_yaml(config_file)
    assert "cannot read weights from" in _one_line_error(capsys, config_file, "--weights", config_file)
    torch.save({"epoch": 1}, tmp_path / "other.pt")
    assert "is no weights file" in _one_line_error(capsys, config_file, "--weights", tmp_path / "other.pt")
    s4 = _write_config(tmp_path / "s4.yaml", config.replace(S=4))
    assert "holds 2 members, the config has S=4" in _one_line_error(capsys, s4, "--weights", weights)
    wider = _write_config(tmp_path / "wider.yaml", config.replace(width_mult=0.5))
    assert "width_mult=0.25" in _one_line_error(capsys, wider, "--weights", weights)
    # Without a config in the file, the shapes still say it: the first misfit tensor is named.
    contents = torch.load(weights, weights_only=True)
    del contents["config"]
    torch.save(contents, tmp_path / "bare.pt")
    assert "does not fit the config" in _one_line_error(capsys, wider, "--weights", tmp_path / "bare.pt")


def test_options_that_do_not_apply_are_one_line_errors(trained_resnet20, tmp_path, capsys):
    config_file, weights = trained_resnet20
    assert "--format" in _one_line_error(capsys, config_file, "--weights", weights, "--format", "tflite")
    assert "has no split block" in _one_line_error(capsys, config_file, "--weights", weights, "--branchwise")
    assert "exclude each other" in _one_line_error(capsys, config_file, "--weights", weights, "--branchwise",
                                                   "--fused")
    assert "overwrite the weights" in _one_line_error(capsys, config_file, "--weights", weights, "-o", weights)


def test_a_family_that_cannot_be_packed_is_refused_with_one_line(tmp_path, capsys):
    config = SplitConfig(arch="densenet_bc190", S=2, width_mult=0.05, dataset="synthetic:20")
    weights = tmp_path / "model.pt"
    networks = build_networks(config, device="meta")
    torch.save({"config": config.to_dict(), "members": [{key: torch.zeros(value.shape, dtype=value.dtype)
                                                         for key, value in network.state_dict().items()}
                                                        for network in networks]}, weights)
    err = _one_line_error(capsys, _write_config(tmp_path / "dense.yaml", config), "--weights", weights,
                          "--format", "torchscript", "--fused")
    assert "--fused" in err and "densenet" in err
    assert not (tmp_path / "dense.torchscript.pt").exists()


def test_onnx_without_its_packages_says_what_to_install(trained_resnet20, tmp_path, capsys, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None if name == "onnxruntime"
                        else find_spec(name, *rest))
    config_file, weights = trained_resnet20
    err = _one_line_error(capsys, config_file, "--weights", weights, "--format", "onnx", "-o", tmp_path / "m.onnx")
    assert 'onnxruntime: pip install "splitsearch[deploy]"' in err
    assert not (tmp_path / "m.onnx").exists()


def test_deploy_help_does_not_import_torch():
    check = ("import sys; from splitsearch.cli import main; main(['deploy', '--help']); "
             "assert 'torch' not in sys.modules, 'torch was imported'")
    root = str(Path(__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "uint8 images" in result.stdout and "1e-4" in result.stdout


def test_an_exporter_failure_is_one_line_and_leaves_no_file(trained_resnet20, tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("Could not export Python function call 'Unsupported'\nmore detail")

    monkeypatch.setattr(torch.jit, "trace", refuse)
    config_file, weights = trained_resnet20
    output = tmp_path / "m.pt"
    err = _one_line_error(capsys, config_file, "--weights", weights, "--format", "torchscript", "-o", output)
    assert "torch could not write resnet20 as torchscript: Could not export Python function call" in err
    assert list(tmp_path.iterdir()) == []


def test_a_torch_without_torchscript_tracing_is_one_line_that_names_onnx(trained_resnet20, tmp_path, capsys,
                                                                          monkeypatch):
    """torch 2.14 deprecates torch.jit.trace: the release that removes it gets a line, not an AttributeError."""
    monkeypatch.delattr(torch.jit, "trace")
    config_file, weights = trained_resnet20
    err = _one_line_error(capsys, config_file, "--weights", weights, "--format", "torchscript", "-o", tmp_path / "m.pt")
    assert "has no torch.jit.trace (TorchScript was removed): use --format onnx" in err
    assert list(tmp_path.iterdir()) == []


def test_a_torchscript_deployment_silences_only_tracings_notes(trained_resnet20, tmp_path):
    """The deprecation of torch.jit.trace/load and the tracer's notes are ignored inside deploy; a warning
    anything else raises there (here: one the module raises while traced) still reaches the caller."""
    import warnings

    from splitsearch import deploy as deploy_module

    config = SplitConfig.from_yaml(trained_resnet20[0])
    original = deploy_module.DeployedEnsemble.forward

    def forward_with_a_warning(self, images):
        warnings.warn("a warning of something else", UserWarning)
        return original(self, images)

    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        deploy_module.deploy(config, trained_resnet20[1], tmp_path / "m.pt", format="torchscript")
        patch.setattr(deploy_module.DeployedEnsemble, "forward", forward_with_a_warning)
        deploy_module.deploy(config, trained_resnet20[1], tmp_path / "other.pt", format="torchscript")
    messages = [str(warning.message) for warning in seen]
    assert "a warning of something else" in messages
    assert not [message for message in messages if "torch.jit" in message or "trace" in message.lower()], messages
