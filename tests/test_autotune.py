"""``--mode auto``: the fastest mode that pays back its compile, measured once per shape and cached in the store.

The choice is tested with a stubbed clock (each mode's steps take the time the test gives them),
so that which mode is fastest does not depend on this machine's load; the cache is tested with
real trainers and a real store, counting the modes measured.
"""

from __future__ import annotations

import pytest
import torch

from splitsearch.config import SplitConfig, TrainConfig
from splitsearch.data import prepare_data
from splitsearch.store import Store, upgrade
from splitsearch.train import loop
from splitsearch.train.autotune import (COMPILE_SECONDS_PRIOR, EXPECTED_COMPILED_SAVING, MIN_MEASURED_TRIAL_STEPS,
                                        CompilePrior, ModeTiming, choose_mode, compile_prior, decide, measure_mode,
                                        shape_key, viable_modes)
from splitsearch.train.loop import Trainer

CPU = torch.device("cpu")
CONFIG = SplitConfig(arch="resnet20", S=2, width_mult=0.25, dataset="digits")
# Seconds a step takes in each mode, and what its first step costs beyond one (a compile).
STEP = {"sequential": 0.4, "fused": 0.5, "compiled-sequential": 0.28, "compiled-fused": 0.2}
COMPILE = {"compiled-sequential": 71.0, "compiled-fused": 500.0}


def stubbed_measure(measured: list[str]):
    """``measure(mode)`` as the trainer's, over a clock that the stubbed steps advance."""
    clock = [0.0]

    def measure(mode: str):
        measured.append(mode)
        first = [True]

        def run_steps(count: int) -> None:
            clock[0] += count * STEP[mode] + (COMPILE.get(mode, 0.0) if first[0] else 0.0)
            first[0] = False

        return measure_mode(run_steps, mode, timer=lambda: clock[0])

    return measure


def test_viable_modes_on_the_cpu() -> None:
    assert viable_modes(CONFIG, CPU) == ["sequential", "fused", "compiled-sequential", "compiled-fused"]
    assert viable_modes(CONFIG.replace(groups=2, split_depth="fc"), CPU) == ["sequential", "compiled-sequential"]


def test_auto_compiles_the_fastest_eager_mode_only_and_keeps_it_once_compiled() -> None:
    measured: list[str] = []
    choice = choose_mode(CONFIG, CPU, 1000, stubbed_measure(measured))

    # Sequential is the faster eager mode, so only its compiled variant is measured: compiling
    # fused too would stake a second compile on the slower mode.
    assert measured == ["sequential", "fused", "compiled-sequential"]
    timings = {timing.mode: timing for timing in choice.timings}
    assert {mode: timing.step_seconds for mode, timing in timings.items()} == pytest.approx(
        {mode: STEP[mode] for mode in measured})
    assert timings["compiled-sequential"].compile_seconds == pytest.approx(71.0)
    assert timings["sequential"].compile_seconds == 0.0
    assert (choice.mode, choice.cached, choice.steps) == ("compiled-sequential", False, 1000)


def test_a_compile_already_paid_by_the_measurement_does_not_count_against_its_mode() -> None:
    timings = [ModeTiming("sequential", 0.4), ModeTiming("compiled-sequential", 0.28, 71.0)]
    # 100 steps save 12 s, less than the 71 s compile: not worth compiling for...
    assert decide(timings, 100) == "sequential"
    # ... but once the measurement has compiled it in this process, training in it costs nothing more.
    assert decide(timings, 100, compiled_here=True) == "compiled-sequential"


class DictCache:
    """A :class:`~splitsearch.train.autotune.ModeCache` in memory (the store is one; tested below)."""

    def __init__(self) -> None:
        self.timings: dict[str, list] = {}

    def mode_timings(self, shape):
        return self.timings.get(repr(sorted(shape.items())))

    def record_mode_timings(self, shape, timings) -> None:
        self.timings[repr(sorted(shape.items()))] = timings

    def device_mode_timings(self, kind):
        return [timings for key, timings in self.timings.items() if f"('device_kind', {kind!r})" in key]


def test_cached_timings_choose_by_each_modes_compile_cost_and_the_trials_steps() -> None:
    cache = DictCache()
    cache.record_mode_timings(shape_key(CONFIG, CPU), [
        {"mode": mode, "step_seconds": STEP[mode], "compile_seconds": COMPILE.get(mode, 0.0)} for mode in STEP])
    measured: list[str] = []

    # compiled-fused is the fastest step, but over 1000 steps saves 0.2 s x 1000 = 200 s < its
    # 500 s compile; compiled-sequential saves 0.12 s x 1000 = 120 s > 71 s.
    short = choose_mode(CONFIG, CPU, 1000, stubbed_measure(measured), cache)
    # Over 5000 steps compiled-fused saves 1000 s > 500 s.
    long = choose_mode(CONFIG, CPU, 5000, stubbed_measure(measured), cache)

    assert measured == []
    assert (short.mode, short.cached) == ("compiled-sequential", True)
    assert (long.mode, long.cached) == ("compiled-fused", True)


def test_what_compiling_gave_other_shapes_on_this_device_sets_whether_to_stake_a_compile() -> None:
    steps = 1000  # 0.4 s x 1000 x the default expected saving 0.2 = 80 s > 60 s: measured without history
    assert STEP["sequential"] * steps * EXPECTED_COMPILED_SAVING > COMPILE_SECONDS_PRIOR
    cache = DictCache()
    # Two other shapes on this CPU: compiling saved 5 % and 2 % of a step, for 70 s and 90 s.
    for width, compiled_step, compile_seconds in ((0.5, 0.95, 70.0), (0.75, 0.98, 90.0)):
        cache.record_mode_timings(shape_key(CONFIG.replace(width_mult=width), CPU), [
            {"mode": "sequential", "step_seconds": 1.0, "compile_seconds": 0.0},
            {"mode": "compiled-sequential", "step_seconds": compiled_step, "compile_seconds": compile_seconds}])
    cache.record_mode_timings(shape_key(CONFIG.replace(width_mult=0.6), CPU), [  # eager only: no evidence
        {"mode": "sequential", "step_seconds": 1.0, "compile_seconds": 0.0}])
    measured: list[str] = []

    choice = choose_mode(CONFIG, CPU, steps, stubbed_measure(measured), cache)

    assert choice.prior == CompilePrior(saving=pytest.approx(0.035), compile_seconds=80.0, shapes=2)
    assert measured == ["sequential", "fused"]  # 0.4 s x 1000 x 0.035 = 14 s < 80 s: no compile staked
    assert choice.mode == "sequential"
    assert compile_prior([]) == CompilePrior(EXPECTED_COMPILED_SAVING, COMPILE_SECONDS_PRIOR, 0)


def test_auto_does_not_compile_for_a_trial_too_short_to_pay_for_it() -> None:
    steps = 400  # 0.4 s x 400 x the expected saving < the compile expected: not even measured
    assert STEP["sequential"] * steps * EXPECTED_COMPILED_SAVING < COMPILE_SECONDS_PRIOR
    measured: list[str] = []
    choice = choose_mode(CONFIG, CPU, steps, stubbed_measure(measured))

    assert measured == ["sequential", "fused"]
    assert choice.mode == "sequential"


@pytest.fixture
def store(tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    upgrade(url)
    store = Store(url)
    yield store
    store.close()


def test_a_second_candidate_of_the_same_shape_uses_the_stores_timings(store, monkeypatch) -> None:
    measured: list[str] = []

    def counted(run_steps, mode, *args, **kwargs):
        measured.append(mode)
        return measure_mode(run_steps, mode, *args, **kwargs)

    monkeypatch.setattr(loop, "measure_mode", counted)
    config = SplitConfig(arch="resnet8", S=2, width_mult=0.25, lambda_cot=0.5, dataset="synthetic:400",
                         train=TrainConfig(epochs=7, batch_size=8, val_fraction=0.2))
    data = prepare_data(config.dataset, config.train)
    assert config.train.epochs * len(data.train) >= MIN_MEASURED_TRIAL_STEPS  # long enough to measure

    first = Trainer(config, data, progress=False, mode_cache=store)
    assert measured == ["sequential", "fused"]  # eager only: these steps are too quick for a compile to pay
    assert first.mode_choice is not None and not first.mode_choice.cached
    assert first.mode == first.mode_choice.mode in ("sequential", "fused")

    other_seed = config.replace(train=TrainConfig(epochs=7, batch_size=8, val_fraction=0.2, seed=7))
    second = Trainer(other_seed, data, progress=False, mode_cache=store)
    assert measured == ["sequential", "fused"]  # nothing measured the second time
    assert second.mode_choice.cached and second.mode_choice.timings == first.mode_choice.timings
    assert second.mode == first.mode


def test_a_trial_too_short_to_measure_runs_as_auto_did(store) -> None:
    config = SplitConfig(arch="resnet8", S=2, width_mult=0.25, dataset="synthetic:40",
                         train=TrainConfig(epochs=1, batch_size=8))
    trainer = Trainer(config, prepare_data(config.dataset, config.train), progress=False, mode_cache=store)
    assert trainer.mode_choice is None and type(trainer.ensemble).__name__ == "SequentialEnsemble"


def test_the_choice_is_recorded_on_the_trial_and_shown_in_its_report_line() -> None:
    import optuna

    from splitsearch.report import data
    from splitsearch.search.record import TrialRecord

    measured: list[str] = []
    choice = choose_mode(CONFIG, CPU, 1000, stubbed_measure(measured))
    attrs = TrialRecord(execution_mode=choice.mode, mode_choice=choice.to_dict()).to_attrs()
    trial = optuna.trial.create_trial(value=0.5, user_attrs=attrs)

    assert TrialRecord.from_trial(trial).mode_choice["timings"][2] == {
        "mode": "compiled-sequential", "step_seconds": pytest.approx(0.28), "compile_seconds": pytest.approx(71.0)}
    assert data.execution(trial) == ("mode compiled-sequential (measured: sequential 400 ms, fused 500 ms, "
                                     "compiled-sequential 280 ms + 71 s compile a step)")
