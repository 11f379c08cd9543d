"""Does every family of the zoo deploy?  ``splitsearch deploy``'s write-and-check for each architecture.

Run (minutes for TorchScript, tens of minutes for ONNX on 2 CPU cores):
    python benchmarks/deploy_zoo.py --format torchscript
    python benchmarks/deploy_zoo.py --format onnx resnet20 wrn16_8

For each architecture: S=2 members of width 0.1 with random weights on 32x32 inputs
(``synthetic:20``; nothing is trained, the question is whether the exporter writes the network and
the written file computes what PyTorch computes), written with :func:`splitsearch.deploy.deploy`
and checked by it.  Prints the largest logit difference, the bound it had to stay under
(1e-4 x max(1, max |logit|): deep networks with random weights give logits in the millions, so
the bound scales with them) and the seconds the write and check took.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import torch

import resultfiles
from splitsearch.build import build_networks
from splitsearch.config import SplitConfig
from splitsearch.deploy import deploy
from splitsearch.errors import SplitsearchError
from splitsearch.models import available_archs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("archs", nargs="*", help="architectures [default: the whole zoo]")
    parser.add_argument("--format", choices=("torchscript", "onnx"), default="torchscript")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    folder = Path(tempfile.mkdtemp(prefix="deploy-zoo-"))
    rows = []
    print(f"{'arch':<22}{'result':<8}{'max |diff|':>12}{'bound':>12}{'seconds':>9}")
    for arch in args.archs or available_archs():
        config = SplitConfig(arch=arch, S=2, width_mult=0.1, dataset="synthetic:20")
        torch.manual_seed(0)
        weights = folder / f"{arch}.pt"
        torch.save({"config": config.to_dict(), "members": [network.state_dict() for network in build_networks(config)]},
                   weights)
        start = time.perf_counter()
        try:
            result = deploy(config, weights, folder / f"{arch}.{args.format}", args.format, batch_size=4)
        except SplitsearchError as error:
            print(f"{arch:<22}{'refused':<8} {error}")
            rows.append({"network": arch, "result": f"refused: {error}"})
            continue
        print(f"{arch:<22}{'ok':<8}{result.max_abs_diff:>12.2g}{result.tolerance:>12.2g}"
              f"{time.perf_counter() - start:>9.1f}", flush=True)
        rows.append({"network": arch, "result": "ok", "max |diff|": result.max_abs_diff, "bound": result.tolerance,
                     "seconds": round(time.perf_counter() - start, 1)})
    resultfiles.save(f"deploy_zoo_{args.format}", rows, notes=f"{args.format}: S=2 members of width 0.1 with random "
                     "weights on 32x32 inputs, one thread; the bound is 1e-4 x max(1, max |logit|).")


if __name__ == "__main__":
    main()
