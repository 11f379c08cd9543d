"""The benchmark scripts that other work depends on run end to end.

The whole GPU suite on the CPU is slow (deselected by default):
    python -m pytest -m slow tests/test_benchmarks.py
"""

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "cifar10-subset.npz"
PARTS = ("cotrain_step", "mfu", "parallel_step", "inference_latency", "train_epoch", "cuda_tests", "ablation_S2",
         "recipes_S1_S4")


def gpu_suite(out: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "benchmarks/gpu_suite.sh", "--device", "cpu", "--quick", "--jobs", "2",
                           "--out", str(out), *options], cwd=ROOT, capture_output=True, text=True, timeout=1800)


def test_gpu_suite_collects_its_parts_in_one_results_file(tmp_path):
    """Two quick parts on the CPU: each one's exit line, figures and section in results.md."""
    done = gpu_suite(tmp_path, "--only", "train_epoch,cuda_tests")
    assert done.returncode == 0, done.stderr
    results = (tmp_path / "results.md").read_text()
    assert "| train_epoch | 0 |" in results and "| cuda_tests | 0 |" in results
    assert "## train_epoch" in results and "## cuda_tests" in results and "## mfu" not in results
    metrics = json.loads((tmp_path / "train_epoch" / "metrics.json").read_text())
    assert f"one epoch {metrics['history'][0]['seconds']:.1f}s" in results
    assert "skipped" in (tmp_path / "cuda_tests.txt").read_text()  # no GPU here: skipped, with the reason
    assert not list((tmp_path / "train_epoch").glob("*.pt"))  # checkpoints are not results


@pytest.mark.parametrize(("options", "message"), [
    (("--only", "nonsense"), "unknown part nonsense"),
    (("--device", "tpu"), "--device must be cuda or cpu"),
    (("--data", "/nowhere.npz"), "/nowhere.npz not found"),
])
def test_gpu_suite_refuses_bad_options_in_one_line(tmp_path, options, message):
    done = gpu_suite(tmp_path, *options)
    assert done.returncode == 2
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_failed_part_fails_the_suite_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{__import__('os').environ['PATH']}")
    (tmp_path / "bin").mkdir()
    fake = tmp_path / "bin" / "python3"  # a python3 whose every run fails
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    done = gpu_suite(tmp_path / "out", "--only", "cuda_tests")
    assert done.returncode == 1
    assert "| cuda_tests | 3 |" in (tmp_path / "out" / "results.md").read_text()
    assert "1 part(s) failed" in done.stderr


@pytest.mark.slow
def test_gpu_suite_v2_dry_run_measures_every_mode_the_pool_and_a_big_candidate(tmp_path):
    done = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "--dry-run", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=3000)
    assert done.returncode == 0, done.stderr
    results = (tmp_path / "results.md").read_text()
    for part in ("modes", "pool_start", "epoch_36M", "cuda_tests"):
        assert f"| {part} | 0 |" in results and f"## {part}" in results
    modes = (tmp_path / "modes.txt").read_text()
    for mode in ("sequential", "fused", "compiled-sequential"):
        assert f" {mode} " in modes
    assert "epoch_36M: resnet8 S=4" in results and "--mode auto: one epoch" in results


@pytest.mark.slow
@pytest.mark.skipif(not DATA.is_file(), reason=f"the CIFAR-10 subset is not at {DATA}")
def test_gpu_suite_runs_end_to_end_on_the_cpu(tmp_path):
    done = gpu_suite(tmp_path, "--data", str(DATA), "--only", ",".join(PARTS))  # version 1's parts
    assert done.returncode == 0, done.stderr
    results = (tmp_path / "results.md").read_text()
    for part in PARTS:
        assert f"== {part}: exit 0" in (tmp_path / f"{part}.txt").read_text()
        assert f"| {part} | 0 |" in results and f"## {part}" in results
    assert "GFLOP/step" in results  # the MFU table
    assert "semantic split, G=2 branches" in results and "branch-par" in results
    assert "parallel / undivided" in results
    runs = [json.loads(line) for line in (tmp_path / "trainings.jsonl").read_text().splitlines()]
    assert {(run["side"], run["S"]) for run in runs} == {
        ("authors", 2), ("recipe", 2), ("reference", 2), ("authors", 1), ("reference", 1)}
    assert all(0 <= run["test_accuracy"] <= 1 for run in runs)


def test_the_gpu_suites_timeouts_fit_in_eight_minutes():
    """The parts' timeouts, plus the grace each gets to die, leave the whole suite under 8 minutes."""
    import re

    script = (ROOT / "benchmarks" / "gpu_suite.sh").read_text()
    budgets = [int(value) for value in re.search(r"^\s*budget=\(([\d ]+)\)\s*$", script, re.M).group(1).split()]
    grace = int(re.search(r"--kill-after=(\d+)", script).group(1))
    assert len(budgets) == len(PARTS)
    assert sum(budgets) + grace * len(budgets) < 8 * 60 - 10  # 10 s for the environment lines and results.md
