"""Do the deployed files compute what the trained ensemble computes, on every test image?

Run (a few minutes on 2 CPU cores; ONNX needs ``pip install "splitsearch[deploy]"``):
    python benchmarks/deploy_agreement.py
    python benchmarks/deploy_agreement.py --arch resnet20 -S 2 --block-factors 1,2,2 --epochs 5

Trains one configuration with ``splitsearch train --final`` (digits by default: no download), then
writes it with ``splitsearch deploy`` four ways (ONNX, TorchScript, ONNX ``--branchwise``,
TorchScript ``--fused``) and runs each file on the whole test split in its own runtime
(onnxruntime, ``torch.jit.load``), side by side with the PyTorch ensemble in the same run: test
accuracy, the share of images whose predicted class agrees with PyTorch's, the largest logit
difference, and the median time of one pass over the test split (one thread each).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

import resultfiles
from splitsearch.cli import main
from splitsearch.config import SplitConfig
from splitsearch.data.device import Normalization
from splitsearch.data.loading import load_dataset
from splitsearch.deploy import load_members, read_model_file
from splitsearch.ensemble import combine_logits


def _timed(run, repeats: int) -> tuple[torch.Tensor, float]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = run()
        times.append(time.perf_counter() - start)
    return out, statistics.median(times)


def main_benchmark() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("-S", type=int, default=2)
    parser.add_argument("--block-factors", default="1,2,2")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    folder = Path(tempfile.mkdtemp(prefix="deploy-agreement-"))
    factors = tuple(int(part) for part in args.block_factors.split(",") if part)
    config = SplitConfig(arch=args.arch, S=args.S, block_factors=factors, dataset=args.dataset)
    config_file = folder / "config.yaml"
    config_file.write_text(config.to_yaml())
    assert main(["train", str(config_file), "--final", "--epochs", str(args.epochs), "--device", "cpu",
                 "--out", str(folder / "run"), "--quiet"]) == 0
    weights = folder / "run" / "model.pt"

    test = load_dataset(config.dataset).test
    images, labels = test.images.contiguous(), test.labels
    states, contents = read_model_file(weights, config)
    members = load_members(config, states, weights)
    normalization = Normalization(tuple(contents["normalization"]["mean"]), tuple(contents["normalization"]["std"]))

    def pytorch() -> torch.Tensor:
        with torch.no_grad():
            normalized = normalization(images)
            return combine_logits(torch.stack([member(normalized) for member in members]), config.train.combine)

    reference, reference_time = _timed(pytorch, args.repeats)
    rows = [("PyTorch ensemble", reference, reference_time)]
    for name, options, suffix in (("ONNX", ["--format", "onnx"], ".onnx"),
                                  ("TorchScript", ["--format", "torchscript"], ".pt"),
                                  ("ONNX --branchwise", ["--format", "onnx", "--branchwise"], "-branchwise.onnx"),
                                  ("TorchScript --fused", ["--format", "torchscript", "--fused"], "-fused.pt")):
        output = folder / f"model{suffix}"
        assert main(["deploy", str(config_file), "--weights", str(weights), "-o", str(output), *options]) == 0
        if suffix.endswith(".onnx"):
            import onnxruntime

            settings = onnxruntime.SessionOptions()
            settings.intra_op_num_threads = settings.inter_op_num_threads = 1
            session = onnxruntime.InferenceSession(str(output), settings, providers=["CPUExecutionProvider"])
            run = lambda: torch.from_numpy(session.run(None, {"images": images.numpy()})[0])  # noqa: E731
        else:
            module = torch.jit.load(str(output))
            run = lambda: module(images).detach()  # noqa: E731
        logits, seconds = _timed(run, args.repeats)
        rows.append((name, logits, seconds))

    print(f"\n{config.arch} S={config.S} block_factors={list(factors)} on {config.dataset}, {args.epochs} epochs "
          f"(--final), {len(labels)} test images, torch {torch.__version__}")
    print(f"{'':<22}{'test acc':>9}{'agree':>9}{'max |diff|':>12}{'pass (ms)':>11}{'vs PyTorch':>11}")
    found = []
    for name, logits, seconds in rows:
        accuracy = (logits.argmax(-1) == labels).float().mean().item()
        agree = (logits.argmax(-1) == reference.argmax(-1)).float().mean().item()
        difference = (logits - reference).abs().max().item()
        print(f"{name:<22}{accuracy:>9.2%}{agree:>9.2%}{difference:>12.2g}{1000 * seconds:>11.1f}"
              f"{seconds / reference_time:>10.2f}x")
        found.append({"form": name, "test accuracy": round(accuracy, 4), "agreement": round(agree, 4),
                      "max |diff|": difference, "pass (ms)": round(1000 * seconds, 1),
                      "vs PyTorch": round(seconds / reference_time, 2)})
    print(f"largest |logit| {reference.abs().max().item():.3g}; files in {folder}")
    resultfiles.save("deploy_agreement", found, notes=f"{config.arch} S={config.S} block_factors={list(factors)} on "
                     f"{config.dataset}, {args.epochs} epochs (--final), {len(labels)} test images, one thread; "
                     f"largest |logit| {reference.abs().max().item():.3g}.")


if __name__ == "__main__":
    main_benchmark()
