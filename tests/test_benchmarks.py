"""The benchmark scripts that other work depends on run end to end (slow: deselected by default).

    python -m pytest -m slow tests/test_benchmarks.py
"""

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "cifar10-subset.npz"


@pytest.mark.slow
@pytest.mark.skipif(not DATA.is_file(), reason=f"the CIFAR-10 subset is not at {DATA}")
def test_gpu_suite_runs_end_to_end_on_the_cpu(tmp_path):
    done = subprocess.run(["bash", "benchmarks/gpu_suite.sh", "--device", "cpu", "--quick", "--jobs", "2",
                           "--out", str(tmp_path), "--data", str(DATA)], cwd=ROOT, capture_output=True, text=True,
                          timeout=1200)
    assert done.returncode == 0, done.stderr
    for part in ("cotrain_step", "ablation_S2", "recipes_S1_S4"):
        assert f"== {part}: exit 0" in (tmp_path / f"{part}.txt").read_text()
    runs = [json.loads(line) for line in (tmp_path / "trainings.jsonl").read_text().splitlines()]
    assert {(run["side"], run["S"]) for run in runs} == {
        ("authors", 2), ("recipe", 2), ("reference", 2), ("authors", 1), ("reference", 1)}
    assert all(0 <= run["test_accuracy"] <= 1 for run in runs)
