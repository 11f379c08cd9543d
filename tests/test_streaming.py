"""Image folders streamed from disk (issue 23): training through the DataLoader path, and bad files.

The folder is real data: CIFAR-10 subset images written as 64x64 JPEG files into class folders,
plus what real folders hold: a grey-scale image, an image of another size and shape, a text file.
Trained at 32x32 (``crop: 32``) so a CPU epoch takes seconds.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from splitsearch.config import SplitConfig, TrainConfig
from splitsearch.data import dataset_info, load_dataset, prepare_data
from splitsearch.data.specs import held_out_train_size

from conftest import run_cli as run

# shared/data beside the checkout (../shared from the repository root); a git worktree sits a level
# deeper, so the nearest folder up from here that holds it counts (else: skipped, as before).
SUBSET = next((folder / "shared" / "data" / "cifar10-subset.npz" for folder in Path(__file__).resolve().parents[1:]
               if (folder / "shared" / "data" / "cifar10-subset.npz").is_file()),
              Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-subset.npz")
IMAGES = 160
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

pytestmark = pytest.mark.skipif(not SUBSET.exists(), reason="the CIFAR-10 subset is not in shared/data")


def _write_jpeg(path: Path, image: torch.Tensor) -> None:
    from torchcodec.encoders import JpegEncoder  # torchvision 0.29 deprecates its encoders for TorchCodec's

    path.parent.mkdir(parents=True, exist_ok=True)
    JpegEncoder(image).to_file(path, quality=90)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """CIFAR-10 images as JPEG files in class folders, with a grey image, a 40x100 PNG and a text file."""
    from torchcodec.encoders import PngEncoder
    from torchvision.transforms import v2

    root = tmp_path_factory.mktemp("images") / "cifar"
    with np.load(SUBSET) as arrays:
        images, labels = arrays["x_train"][:IMAGES], arrays["y_train"][:IMAGES]
    for index, (image, label) in enumerate(zip(images, labels)):
        pixels = torch.from_numpy(image if image.shape[0] == 3 else image.transpose(2, 0, 1)).contiguous()
        _write_jpeg(root / CLASSES[label] / f"{index}.jpg", v2.functional.resize(pixels, [64, 64], antialias=True))
    grey = torch.from_numpy(images[0] if images[0].shape[0] == 3 else images[0].transpose(2, 0, 1))[:1].contiguous()
    _write_jpeg(root / "cat" / "grey.jpg", grey)
    PngEncoder(torch.randint(0, 256, (3, 40, 100), dtype=torch.uint8)).to_file(root / "dog" / "wide.png")
    (root / "dog" / "notes.txt").write_text("not an image, and not named like one: skipped as torchvision does")
    return root


def _copy(folder: Path, tmp_path: Path, per_class: int = 4) -> Path:
    """A small copy of ``folder``: the first images of each class, to spoil with a bad file."""
    root = tmp_path / "small"
    for name in CLASSES:
        (root / name).mkdir(parents=True)
        for path in sorted((folder / name).glob("*.jpg"))[:per_class]:
            shutil.copy(path, root / name / path.name)
    return root


def _config(tmp_path: Path, dataset: str, crop: int | None = 32, **train: object) -> Path:
    path = tmp_path / "tiny.yaml"
    settings = {"epochs": 1, "batch_size": 16, **train}
    path.write_text(SplitConfig("resnet20", S=2, width_mult=0.25, dataset=dataset, crop=crop,
                                train=TrainConfig(**settings)).to_yaml())
    return path


def test_one_epoch_streams_through_the_cli(folder, tmp_path, capsys):
    spec = f"imagefolder:{folder}"
    out = tmp_path / "run"
    code, stdout, stderr = run(capsys, "train", _config(tmp_path, spec), "--device", "cpu", "--out", out,
                               "--data-path", "stream", "--loader-workers", "1", "--quiet")
    assert code == 0, stderr
    assert "streamed from disk at 32x32" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    # Every image file counts, the grey one and the PNG of another size too; the text file does not.
    images = IMAGES + 2
    train_and_val = held_out_train_size(images)
    assert dataset_info(spec).train_images == train_and_val  # counted without decoding, the same files
    assert metrics["val_samples"] == round(0.1 * train_and_val)
    assert f"{train_and_val - metrics['val_samples']} training images" in stdout
    assert len(metrics["history"]) == 1 and np.isfinite(metrics["history"][0]["train_loss"])


def test_members_get_their_own_crops_reproducibly_whatever_the_workers(folder):
    config = TrainConfig(batch_size=8, seed=3)

    def first_batch(workers: int) -> tuple[torch.Tensor, torch.Tensor]:
        data = prepare_data(f"imagefolder:{folder}", config, crop=32, data_path="stream", workers=workers)
        data.train.members = 3
        return next(iter(data.train))

    images, labels = first_batch(0)
    assert images.dtype == torch.uint8 and images.shape == (8, 3, 3, 32, 32)
    # Each member sees its own random-resized crop of each image.
    assert all(not torch.equal(images[:, 0], images[:, member]) for member in (1, 2))
    again, again_labels = first_batch(2)
    assert torch.equal(images, again) and torch.equal(labels, again_labels)


def test_a_resumed_loader_draws_the_epoch_it_would_have_drawn(folder):
    """What a resumed training relies on: epoch 2's batches depend on the epoch number, not on the loader's past."""
    config = TrainConfig(batch_size=8, seed=5)

    def loader():
        data = prepare_data(f"imagefolder:{folder}", config, crop=16, data_path="stream", workers=0)
        data.train.members = 2
        return data.train

    running = loader()
    epochs = [next(iter(running)) for _ in range(3)]
    resumed = loader()
    resumed.epoch = 2
    images, labels = next(iter(resumed))
    assert torch.equal(images, epochs[2][0]) and torch.equal(labels, epochs[2][1])
    assert not torch.equal(epochs[1][0], epochs[2][0])  # another epoch, other crops and order


def test_streamed_and_resident_folders_hold_out_the_same_images(folder):
    resident = load_dataset(f"imagefolder:{folder}", crop=16, data_path="resident")
    streamed = load_dataset(f"imagefolder:{folder}", crop=16, data_path="stream")
    assert not resident.streamed and streamed.streamed
    assert torch.equal(resident.test.labels, streamed.test.labels)
    assert torch.equal(resident.train.labels, streamed.train.labels)
    assert resident.train.images.shape[1:] == (3, 16, 16)  # the grey image became RGB, the wide PNG square


def test_the_automatic_choice_keeps_small_folders_in_memory(folder):
    assert not load_dataset(f"imagefolder:{folder}", crop=32).streamed


def test_evaluation_batches_are_centre_crops_of_rgb_images(folder):
    data = prepare_data(f"imagefolder:{folder}", TrainConfig(batch_size=200, val_fraction=0.0), crop=32,
                        data_path="stream", workers=0)
    images, labels = next(iter(data.test))
    assert images.shape == (len(data.test.files), 3, 32, 32) and len(labels) == len(images)


@pytest.mark.parametrize(("spoil", "expected"), [
    (lambda root: (root / "cat" / "fake.jpg").write_text("hello"), "fake.jpg is not an image"),
    (lambda root: (root / "dog" / "cut.jpg").write_bytes(next((root / "dog").glob("*.jpg")).read_bytes()[:900]),
     "cut.jpg is a truncated JPEG"),
    (lambda root: (root / "zebra").mkdir(), "zebra holds no images"),
])
def test_a_bad_folder_is_refused_before_training_in_one_line(folder, tmp_path, capsys, spoil, expected):
    root = _copy(folder, tmp_path)
    spoil(root)
    code, stdout, stderr = run(capsys, "train", _config(tmp_path, f"imagefolder:{root}"), "--device", "cpu",
                               "--out", tmp_path / "run", "--data-path", "stream", "--quiet")
    assert code == 2 and expected in stderr
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_a_file_that_fails_to_decode_in_a_worker_is_named_in_one_line(folder, tmp_path, capsys):
    root = _copy(folder, tmp_path)
    # A JPEG's first and last bytes around garbage: it passes the up-front check, not the decoder.
    (root / "cat" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 8 + b"\xff\xd9")
    # --final: every image is read (trained on, or tested at the end), wherever the file falls.
    code, _, stderr = run(capsys, "train", _config(tmp_path, f"imagefolder:{root}"), "--device", "cpu", "--final",
                          "--out", tmp_path / "run", "--data-path", "stream", "--loader-workers", "1", "--quiet")
    assert code == 2 and "cannot decode the image" in stderr and "broken.jpg" in stderr
    assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr


def test_stream_is_refused_for_a_dataset_that_is_not_a_folder(capsys, tmp_path):
    code, _, stderr = run(capsys, "train", _config(tmp_path, "digits", crop=None), "--device", "cpu", "--data-path", "stream",
                          "--out", tmp_path / "run", "--quiet")
    assert code == 2 and "only image folders" in stderr


def test_imagenet_layout_takes_the_labels_of_train_for_val(folder, tmp_path):
    root = tmp_path / "imagenet"
    for part, per_class in (("train", 4), ("val", 2)):
        for name in CLASSES[:3]:
            (root / part / name).mkdir(parents=True)
            for path in sorted((folder / name).glob("*.jpg"))[:per_class]:
                shutil.copy(path, root / part / name / path.name)
    (root / "val" / "stray").mkdir()  # a class only val has: not in train, ignored (no label for it)
    info = dataset_info(f"imagenet:{root}")
    assert (info.num_classes, info.image_size, info.imagenet_like) == (3, 224, True)
    dataset = load_dataset(f"imagenet:{root}", data_path="stream")
    assert dataset.train.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert dataset.test.labels.tolist() == [0] * 2 + [1] * 2 + [2] * 2
    shutil.rmtree(root / "val" / CLASSES[1])
    with pytest.raises(ValueError, match="lacks the class folder"):
        load_dataset(f"imagenet:{root}", data_path="stream")
    for folder_of_class in (root / "val").iterdir():  # ImageNet's validation images as distributed: flat
        shutil.rmtree(folder_of_class)
    shutil.copy(next((root / "train" / CLASSES[0]).glob("*.jpg")), root / "val" / "ILSVRC2012_val_1.jpg")
    with pytest.raises(ValueError, match="sort the validation images into val/<wnid>/"):
        load_dataset(f"imagenet:{root}", data_path="stream")


def test_run_completes_a_two_trial_study_on_a_streamed_folder(folder, tmp_path, capsys, monkeypatch):
    from splitsearch.data.stream import FolderImages

    views = []  # (members, epoch) of each training image read, in this process (no workers)
    read = FolderImages.__getitem__
    monkeypatch.setattr(FolderImages, "__getitem__", lambda self, key: views.append(key[1:]) or read(self, key))
    study = tmp_path / "folder.yaml"
    study.write_text(f"name: streamed\narch: resnet20\ndataset: imagefolder:{folder}\nspace: divide\n"
                     "epochs: 1\nn_trials: 2\nbudget_params: 20K\nbase: {crop: 32, train: {batch_size: 32}}\n")
    code, stdout, stderr = run(capsys, "run", study, "--storage", f"sqlite:///{tmp_path / 's.db'}", "--device", "cpu",
                               "--runs-dir", tmp_path / "runs", "--data-path", "stream", "--loader-workers", "0")
    assert code == 0, stderr
    import optuna

    trials = optuna.load_study(study_name="streamed", storage=f"sqlite:///{tmp_path / 's.db'}").trials
    finished = [trial for trial in trials if trial.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 2
    # Each trial trained one epoch of streamed batches of S views (the plan's timing steps read more).
    train_and_val = held_out_train_size(IMAGES + 2)
    per_epoch = (train_and_val - round(0.1 * train_and_val)) // 32 * 32
    trained = [members for members, _ in views if members > 0]
    assert len(trained) >= 2 * per_epoch
    assert all(trial.state.name != "FAIL" for trial in trials)


def test_the_shipped_imagenet_study_holds_seed_004s_recipe():
    from splitsearch.search.study import load_study_spec, resolve_study_file

    # Parsed only: wrn50_2's ImageNet builder comes from another branch; the recipe is the point.
    spec = load_study_spec(resolve_study_file("imagenet-wrn50-2"))
    train, _ = spec.base.train.with_dataset_defaults(dataset_info(spec.base.dataset))
    assert (spec.base.arch, train.epochs, train.batch_size, train.label_smoothing) == ("wrn50_2", 120, 256, 0.1)
    assert round(train.lr_warmup_fraction * train.epochs) == 5 and dataset_info(spec.base.dataset).imagenet_like
