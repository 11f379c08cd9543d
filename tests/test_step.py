"""The co-training step: compiled and eager give the same numbers, and a failed compile falls back to eager.

Compiling is slow on this CPU (about a minute here), so one compiled step (ResNet-8, S=2, width 4 at base width 16,
batch 8) is built once for the module and its three steps are compared with an eager step's.
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

from splitsearch.config import SplitConfig, TrainConfig, compile_mode, ensemble_mode
from splitsearch.ensemble import make_ensemble
from splitsearch.train.optim import make_optimizer
from splitsearch.train.parallel import MemberGroup
from splitsearch.train.stage import PlainStage
from splitsearch.train.step import CotrainStep, step_optimizer_options

CONFIG = SplitConfig(arch="resnet8", S=2, width_mult=0.25, lambda_cot=0.5, dataset="synthetic:40",
                     train=TrainConfig(batch_size=8, lr=0.05, weight_decay=5e-4))
STEPS = 3
# Inductor fuses and reorders float32 arithmetic, so the compiled step's numbers differ from eager's by
# rounding only: after three SGD steps every parameter within 1e-4 relative + 1e-5 absolute, every loss 1e-5.
RTOL, ATOL = 1e-4, 1e-5


def batches() -> list[tuple[torch.Tensor, torch.Tensor, float]]:
    """Three batches of both members' views, labels and co-training weights, drawn once."""
    generator = torch.Generator().manual_seed(0)
    return [(torch.randn(CONFIG.S, 8, 3, 8, 8, generator=generator), torch.randint(0, 10, (8,), generator=generator),
             0.1 * (index + 1)) for index in range(STEPS)]


def make_step(mode: str, backend: str | object = "inductor", config: SplitConfig = CONFIG) -> CotrainStep:
    torch.manual_seed(0)  # the same initial weights for every step made here
    ensemble = make_ensemble(config, mode)
    optimizer = make_optimizer(ensemble, config.train, config.wd_rule, config.S,
                               step_optimizer_options(torch.device("cpu"), compile_mode(mode) is not None))
    return CotrainStep(ensemble, ensemble, MemberGroup.single(config.S), optimizer, PlainStage(config, "cpu"),
                       members=config.S, cotrain=True, label_smoothing=0.0, autocast=False,
                       compile_mode=compile_mode(mode), backend=backend)


def run(step: CotrainStep) -> list[torch.Tensor]:
    return [step(views, labels, None, 1.0, weight) for views, labels, weight in batches()]


@pytest.fixture(scope="module")
def compiled() -> tuple[CotrainStep, list[torch.Tensor]]:
    step = make_step("compiled-sequential")
    return step, run(step)


def test_modes_name_how_the_members_are_held_and_compiled() -> None:
    assert [(ensemble_mode(mode), compile_mode(mode)) for mode in ("sequential", "compiled-fused", "graphed-fused")] \
        == [("sequential", None), ("fused", "default"), ("fused", "reduce-overhead")]
    with pytest.raises(ValueError, match="mode must be one of"):
        ensemble_mode("compiled")


@pytest.mark.slow  # about a minute of compiling on a 2-core CPU
def test_the_compiled_step_gives_the_eager_steps_losses_and_parameters(compiled) -> None:
    step, compiled_parts = compiled
    eager = make_step("sequential")
    eager_parts = run(eager)

    assert step.compiled and not eager.compiled
    assert step.optimizer.defaults.get("fused") and not eager.optimizer.defaults.get("fused")
    for mine, reference in zip(compiled_parts, eager_parts):
        torch.testing.assert_close(mine, reference, rtol=RTOL, atol=ATOL)
    assert eager_parts[0][2] > 0  # the co-training term is on, in both
    compiled_state, eager_state = step.ensemble.state_dict(), eager.ensemble.state_dict()
    changed = [name for name, value in eager_state.items() if value.is_floating_point()
               and not torch.equal(value, make_step("sequential").ensemble.state_dict()[name])]
    assert changed  # three steps moved the weights, so equal weights say something
    for name, value in eager_state.items():
        torch.testing.assert_close(compiled_state[name], value, rtol=RTOL, atol=ATOL, msg=name)


def test_a_compile_failure_trains_eagerly_after_one_warning_line() -> None:
    def failing_backend(graph, example_inputs):
        raise RuntimeError("this backend cannot compile anything\nsecond line of detail")

    step = make_step("compiled-sequential", backend=failing_backend)
    eager = make_step("sequential")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parts = run(step)
    told = [str(warning.message) for warning in caught if "compiling the co-training step" in str(warning.message)]

    assert len(told) == 1 and "\n" not in told[0]
    assert "this backend cannot compile anything" in told[0] and "training it eagerly" in told[0]
    assert not step.compiled
    # Eager from the first step on: the numbers of a step that never tried to compile (up to the
    # fused SGD kernel's rounding, torch's default float32 tolerance).
    for mine, reference in zip(parts, run(eager)):
        torch.testing.assert_close(mine, reference)


def test_every_new_shape_in_a_process_is_compiled_past_dynamos_recompile_limit() -> None:
    """A search compiles one shape per candidate; Dynamo alone runs the 9th and later eagerly, unseen."""
    graphs = []

    def counting_backend(graph, example_inputs):  # compiles nothing: records that Dynamo captured a graph
        graphs.append(graph)
        return graph.forward

    views, labels, weight = batches()[0]
    for candidate in range(10):  # widths of 4, 5, ..., 13 channels at base width 16: ten shapes
        config = dataclasses.replace(CONFIG, width_mult=0.25 + candidate / 16)
        step = make_step("compiled-sequential", backend=counting_backend, config=config)
        captured = len(graphs)
        step(views, labels, None, 1.0, weight)
        assert len(graphs) > captured, f"candidate {candidate + 1}'s step ran without being compiled"
        assert step.compiled
