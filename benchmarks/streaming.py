"""Streaming an image folder from disk against holding it in memory: speed, and memory as the folder grows.

Run (about 2 minutes on 2 CPU cores with the defaults):
    python benchmarks/streaming.py
    python benchmarks/streaming.py --images 1000 --size 64 --members 2 --batch 64 --workers 2

Writes CIFAR-10 subset images as JPEG files (``--size`` pixels square) into class folders in a
temporary directory, twice: ``--images`` files, and four times as many.  Then, on the smaller
folder, side by side in one run, the images per second each path hands the trainer as
normalised member views ``[S, B, C, H, W]`` (``splitsearch.train.augment.augment``): the
resident path cuts padded crops from uint8 images held in memory, the streaming path decodes
JPEG files and cuts random-resized crops in ``--workers`` worker processes.  The resident
path's one-off decoding of the folder is timed apart.  Last, one streamed epoch of each folder
runs in a fresh process whose peak memory, with its workers', is sampled from /proc (PSS, so
the pages workers share with their parent count once): it must not grow with the folder.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

import resultfiles

ROOT = Path(__file__).resolve().parents[1]
SUBSET = ROOT.parent / "shared" / "data" / "cifar10-subset.npz"
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def write_folder(root: Path, count: int, size: int) -> None:
    """``count`` subset images (repeated when the subset has fewer) as ``size``-pixel JPEG files."""
    from torchcodec.encoders import JpegEncoder
    from torchvision.transforms import v2

    with np.load(SUBSET) as arrays:
        images = np.concatenate([arrays["x_train"], arrays["x_test"]])
        labels = np.concatenate([arrays["y_train"], arrays["y_test"]])
    for name in CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        image = images[index % len(images)]
        pixels = torch.from_numpy(image if image.shape[0] == 3 else image.transpose(2, 0, 1)).contiguous()
        pixels = v2.functional.resize(pixels, [size, size], antialias=True)
        JpegEncoder(pixels).to_file(root / CLASSES[labels[index % len(images)]] / f"{index}.jpg", quality=90)


def views_per_second(data, members: int, epochs: int) -> float:
    """Images per second delivered as normalised member views over ``epochs`` epochs (after one warm-up)."""
    from splitsearch.config import TrainConfig
    from splitsearch.train.augment import augment

    settings, _ = TrainConfig(batch_size=data.train.batch_size).with_dataset_defaults(data.info)
    generator = torch.Generator().manual_seed(0)
    data.train.members = members
    images = 0
    for epoch in range(epochs + 1):
        if epoch == 1:
            start, images = time.perf_counter(), 0
        for batch, _ in data.train:
            views = augment(batch, members, settings, generator, data.normalization)
            images += views.shape[1]
    return images / (time.perf_counter() - start)


def _pss_kib(pid: int) -> int:
    """Proportional set size of one process in KiB (0 once it has gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in task.read_text().split()]
        except OSError:
            pass
    return found


def child_epoch(folder: Path, size: int, members: int, batch: int, workers: int) -> None:
    """One streamed epoch in this process; prints the peak PSS of it and its workers as JSON."""
    from splitsearch.config import TrainConfig
    from splitsearch.data import prepare_data

    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            me = os.getpid()
            peak[0] = max(peak[0], _pss_kib(me) + sum(_pss_kib(child) for child in _children(me)))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    data = prepare_data(f"imagefolder:{folder}", TrainConfig(batch_size=batch), crop=size, data_path="stream",
                        workers=workers)
    data.train.members = members
    count = sum(len(images) for images, _ in data.train)
    done.set()
    sampler.join()
    print(json.dumps({"images": count, "peak_mib": peak[0] / 1024}))


def streamed_epoch_peak(folder: Path, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--child-epoch", str(folder), "--size", str(args.size),
               "--members", str(args.members), "--batch", str(args.batch), "--workers", str(args.workers)]
    done = subprocess.run(command, capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--members", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--child-epoch", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_epoch is not None:
        child_epoch(args.child_epoch, args.size, args.members, args.batch, args.workers)
        return
    sys.path.insert(0, str(ROOT))
    from splitsearch.config import TrainConfig
    from splitsearch.data import prepare_data

    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, {args.images} images at {args.size}x{args.size}, "
          f"S={args.members}, batch {args.batch}, {args.workers} workers")
    with tempfile.TemporaryDirectory() as temporary:
        small, large = Path(temporary) / "x1", Path(temporary) / "x4"
        write_folder(small, args.images, args.size)
        write_folder(large, 4 * args.images, args.size)
        spec = f"imagefolder:{small}"
        config = TrainConfig(batch_size=args.batch)
        started = time.perf_counter()
        resident = prepare_data(spec, config, crop=args.size, data_path="resident")
        decode_seconds = time.perf_counter() - started
        streamed = prepare_data(spec, config, crop=args.size, data_path="stream", workers=args.workers)
        rates = {}
        for name, data in (("resident", resident), ("stream", streamed), ("resident ", resident),
                           ("stream ", streamed)):  # twice, alternating, so load on the machine hits both
            rates.setdefault(name.strip(), []).append(views_per_second(data, args.members, args.epochs))
        resident_rate, stream_rate = (max(rates[name]) for name in ("resident", "stream"))
        print(f"resident: decoding the folder into memory once: {decode_seconds:.1f} s")
        print(f"resident: {resident_rate:,.0f} images/s (best of {len(rates['resident'])} runs of "
              f"{args.epochs} epochs)")
        print(f"stream:   {stream_rate:,.0f} images/s  ratio stream/resident {stream_rate / resident_rate:.2f}x")
        one, four = streamed_epoch_peak(small, args), streamed_epoch_peak(large, args)
        print(f"streamed epoch, peak memory with workers (PSS): {one['images']:,} images {one['peak_mib']:.0f} MiB, "
              f"{four['images']:,} images {four['peak_mib']:.0f} MiB  ratio {four['peak_mib'] / one['peak_mib']:.2f}x")
    resultfiles.save("streaming", [
        {"path": "resident", "images/s": round(resident_rate), "ratio to resident": 1.0},
        {"path": "stream", "images/s": round(stream_rate), "ratio to resident": round(stream_rate / resident_rate, 2)},
        {"path": f"stream, peak memory of an epoch of {one['images']:,} images (MiB)", "MiB": round(one['peak_mib'])},
        {"path": f"stream, peak memory of an epoch of {four['images']:,} images (MiB)", "MiB": round(four['peak_mib'])},
    ], notes=f"{args.images} images at {args.size}x{args.size} as JPEG files, S={args.members}, batch {args.batch}, "
       f"{args.workers} decoding workers; rates are the best of 2 alternating runs of {args.epochs} epochs; memory is "
       "the PSS of the process and its workers, sampled every 20 ms. Decoding the folder into memory once took "
       f"{decode_seconds:.1f} s.")


if __name__ == "__main__":
    main()
