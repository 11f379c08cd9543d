from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from splitsearch.config import TrainConfig
from splitsearch.data import (
    ImageDataset,
    ImageSplit,
    Normalization,
    TensorLoader,
    dataset_info,
    load_dataset,
    prepare_data,
    split_validation,
)
from splitsearch.train.augment import augment, auto_augment, crop_flip, mixup, random_erase

CIFAR_SUBSET = Path(__file__).resolve().parents[2] / "shared/data/cifar10-subset.npz"
PLAIN = TrainConfig(crop_padding=0, hflip=False, random_erasing=0.0)


def cifar_settings(**settings) -> TrainConfig:
    """Train settings with CIFAR's augmentation defaults filled in, as the trainer fills them."""
    return TrainConfig(**settings).with_dataset_defaults(dataset_info("cifar10"))[0]


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_images(count: int, channels: int = 3, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (count, channels, size, size), generator=generator(seed), dtype=torch.uint8)


def assert_split(split: ImageSplit, shape: tuple[int, int, int]) -> None:
    assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.int64
    assert split.images.shape[1:] == shape and split.images.is_contiguous()
    assert len(split.images) == len(split.labels) == len(split)


# -- loading ---------------------------------------------------------------------------------------


def test_digits_are_real_scaled_and_held_out_with_a_fixed_seed():
    dataset = load_dataset("digits")
    assert_split(dataset.train, (1, 8, 8))
    assert_split(dataset.test, (1, 8, 8))
    assert len(dataset.train) + len(dataset.test) == 1797 and len(dataset.test) == 359
    assert dataset.train.images.max() == 255 and set(dataset.train.labels.tolist()) == set(range(10))
    assert torch.equal(load_dataset("digits").test.images, dataset.test.images)


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_npz_loads_either_layout_as_contiguous_nchw(tmp_path, layout):
    x_train, x_test = random_images(12).numpy(), random_images(4, seed=1).numpy()
    if layout == "NHWC":
        x_train, x_test = x_train.transpose(0, 2, 3, 1), x_test.transpose(0, 2, 3, 1)
    path = tmp_path / "data.npz"
    np.savez(path, x_train=x_train, y_train=np.arange(12) % 10, x_test=x_test, y_test=np.arange(4))
    dataset = load_dataset(f"npz:{path}")
    assert_split(dataset.train, (3, 32, 32))
    assert_split(dataset.test, (3, 32, 32))
    assert torch.equal(dataset.train.images, random_images(12))
    assert dataset.train.labels.tolist() == [i % 10 for i in range(12)]


def test_npz_with_float_images_is_refused(tmp_path):
    path = tmp_path / "data.npz"
    images = np.zeros((2, 3, 8, 8), dtype=np.float32)
    np.savez(path, x_train=images, y_train=np.arange(2), x_test=images, y_test=np.arange(2))
    with pytest.raises(ValueError, match="uint8"):
        load_dataset(f"npz:{path}")


def test_imagefolder_is_resized_to_the_size_the_model_is_built_for(tmp_path):
    from PIL import Image

    for label, name in enumerate(["cat", "dog"]):
        (tmp_path / name).mkdir()
        for index in range(5):
            pixels = np.full((10, 12, 3), 20 * index + 100 * label, dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / name / f"{index}.png")
    spec = f"imagefolder:{tmp_path}"
    dataset = load_dataset(spec)
    size = dataset_info(spec).image_size
    assert_split(dataset.train, (3, size, size))
    assert (len(dataset.train), len(dataset.test)) == (8, 2)
    assert sorted(torch.cat([dataset.train.labels, dataset.test.labels]).tolist()) == [0] * 5 + [1] * 5


def test_imagefolder_is_loaded_at_the_configured_crop(tmp_path):
    from PIL import Image

    from splitsearch.data import DataCache

    for name in ["cat", "dog"]:
        (tmp_path / name).mkdir()
        for index in range(5):
            Image.fromarray(np.full((10, 12, 3), 30 * index, dtype=np.uint8)).save(tmp_path / name / f"{index}.png")
    spec = f"imagefolder:{tmp_path}"
    assert_split(load_dataset(spec, crop=16).train, (3, 16, 16))
    cache = DataCache()
    config = TrainConfig(batch_size=4)
    assert cache.get(spec, config, crop=16).info.image_size == 16
    assert cache.get(spec, config, crop=24).info.image_size == 24


def test_crop_is_refused_where_images_have_a_fixed_size():
    with pytest.raises(ValueError, match="digits has fixed 8x8 images"):
        dataset_info("digits", crop=16)
    assert dataset_info("digits", crop=8) == dataset_info("digits")


def test_synthetic_is_seeded():
    dataset = load_dataset("synthetic:50")
    assert_split(dataset.train, (3, 32, 32))
    assert (len(dataset.train), len(dataset.test)) == (40, 10)
    assert torch.equal(load_dataset("synthetic:50").train.images, dataset.train.images)


def test_missing_cifar10_names_the_directory_and_the_way_out(tmp_path):
    with pytest.raises(ValueError) as caught:
        load_dataset("cifar10", data_dir=tmp_path)
    message = str(caught.value)
    assert str(tmp_path) in message and "--download" in message and "--data-dir" in message


def test_counting_only_dataset_is_not_loadable():
    with pytest.raises(ValueError, match="imagefolder"):
        load_dataset("imagenet")


# -- validation split and loaders ------------------------------------------------------------------


def numbered_dataset(count: int) -> ImageDataset:
    """Labels are the image numbers, so a split's labels say which images it holds."""
    train = ImageSplit(random_images(count, size=4), torch.arange(count))
    test = ImageSplit(random_images(5, size=4), torch.arange(5))
    return ImageDataset(dataset_info("synthetic:1"), train, test)


def test_validation_split_is_disjoint_sized_and_seeded():
    dataset = numbered_dataset(200)
    splits = split_validation(dataset, fraction=0.1, seed=3)
    train, val = set(splits.train.labels.tolist()), set(splits.val.labels.tolist())
    assert len(val) == 20 and not train & val and train | val == set(range(200))
    assert splits.test is dataset.test
    assert torch.equal(split_validation(dataset, 0.1, seed=3).val.labels, splits.val.labels)
    assert not torch.equal(split_validation(dataset, 0.1, seed=4).val.labels, splits.val.labels)
    assert len(split_validation(dataset, 0.0).val) == 0 and len(split_validation(dataset, 0.0).train) == 200


def test_loader_batches_cover_the_split_reproducibly():
    split = ImageSplit(random_images(10, size=4), torch.arange(10))
    loader = TensorLoader(split, batch_size=4, shuffle=True, seed=1)
    assert len(loader) == 3 and len(TensorLoader(split, 4, drop_last=True)) == 2
    first = [labels for _, labels in loader]
    assert [len(labels) for labels in first] == [4, 4, 2]
    assert sorted(torch.cat(first).tolist()) == list(range(10))
    second = torch.cat([labels for _, labels in loader])
    assert not torch.equal(second, torch.cat(first))
    again = TensorLoader(split, batch_size=4, shuffle=True, seed=1)
    assert torch.equal(torch.cat([labels for _, labels in again]), torch.cat(first))
    again.epoch = 1
    assert torch.equal(torch.cat([labels for _, labels in again]), second)
    images, labels = next(iter(loader))
    assert torch.equal(images, split.images[labels])


def test_prepare_data_normalises_with_training_statistics():
    config = TrainConfig(batch_size=64)
    data = prepare_data("digits", config)
    assert data.train.num_samples + data.val.num_samples == 1438 and data.val.num_samples == 144
    assert data.train.drop_last and data.train.shuffle and not data.val.shuffle
    normalised = data.normalization(data.train.images)
    assert normalised.dtype == torch.float32
    assert abs(normalised.mean().item()) < 1e-4 and abs(normalised.std().item() - 1) < 1e-2


# -- augmentation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "padding", "flip", "batch"), [
    ("digits", 1, False, 32), ("cifar10", 4, True, 128), ("cifar100", 4, True, 128), ("svhn", 4, False, 128),
    ("synthetic:100", 4, True, 16), ("synthetic:4000", 4, True, 64), ("imagenet", 28, True, 256),
])
def test_training_defaults_follow_the_dataset(spec, padding, flip, batch):
    settings, applied = TrainConfig().with_dataset_defaults(dataset_info(spec))
    assert (settings.crop_padding, settings.hflip, settings.batch_size) == (padding, flip, batch)
    # ImageNet takes seed 004's recipe: batch 256 and label smoothing 0.1; the others no smoothing.
    smoothing = {"label_smoothing": 0.1} if spec == "imagenet" else {}
    assert applied == {"crop_padding": padding, "hflip": flip, "batch_size": batch, **smoothing}
    assert settings.label_smoothing == smoothing.get("label_smoothing")


def test_default_batch_leaves_at_least_30_steps_an_epoch_where_it_can():
    for count in (100, 1_000, 2_000, 5_000, 50_000):
        info = dataset_info(f"synthetic:{count}")
        batch = TrainConfig().with_dataset_defaults(info)[0].batch_size
        assert batch in (16, 32, 64, 128)
        assert info.train_images // batch >= 30 or batch == 16
        assert batch == 128 or info.train_images // (2 * batch) < 30  # the largest such batch


def test_settings_in_the_config_win_over_the_dataset_defaults():
    settings, applied = TrainConfig(crop_padding=3, batch_size=8).with_dataset_defaults(dataset_info("digits"))
    assert (settings.crop_padding, settings.hflip, settings.batch_size) == (3, False, 8)
    assert applied == {"hflip": False}
    assert TrainConfig(crop_padding=0, hflip=True, batch_size=64).with_dataset_defaults(dataset_info("digits"))[1] == {}


def test_npz_info_knows_its_training_size(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x_train=random_images(12).numpy(), y_train=np.arange(12) % 10,
             x_test=random_images(4).numpy(), y_test=np.arange(4))
    assert dataset_info(f"npz:{path}").train_images == 12
    assert len(load_dataset("digits").train) == dataset_info("digits").train_images


def test_augment_refuses_settings_left_to_the_dataset():
    images = random_images(2)
    with pytest.raises(ValueError, match="with_dataset_defaults"):
        augment(images, 1, TrainConfig(), generator(), Normalization.of(images))


def test_augment_gives_each_member_its_own_contiguous_view():
    images = random_images(8)
    norm = Normalization.of(images)
    views = augment(images, 4, cifar_settings(random_erasing=0.5), generator(), norm)
    assert views.shape == (4, 8, 3, 32, 32) and views.dtype == torch.float32 and views.is_contiguous()
    assert all(not torch.equal(views[0], views[member]) for member in range(1, 4))


def test_augment_without_random_parts_returns_the_normalised_input_for_every_member():
    images = random_images(6)
    norm = Normalization.of(images)
    views = augment(images, 3, PLAIN, generator(), norm)
    assert all(torch.equal(view, norm(images)) for view in views)


def test_crop_flip_mirrors_exactly_where_a_flip_was_drawn():
    images = random_images(6)
    flip = torch.tensor([True, False, True, True, False, False])
    centre = torch.full((6,), 4)
    out = crop_flip(images, centre, centre, flip, padding=4)
    assert torch.equal(out[flip], torch.flip(images[flip], dims=[-1]))
    assert torch.equal(out[~flip], images[~flip])


def test_crop_flip_cuts_the_window_at_the_offsets_of_the_zero_padded_image():
    images = random_images(3)
    top, left = torch.tensor([0, 8, 2]), torch.tensor([5, 0, 8])
    out = crop_flip(images, top, left, torch.zeros(3, dtype=torch.bool), padding=4, source=torch.tensor([2, 0, 0]))
    padded = F.pad(images, (4, 4, 4, 4))
    for n, source in enumerate([2, 0, 0]):
        assert torch.equal(out[n], padded[source, :, top[n]:top[n] + 32, left[n]:left[n] + 32])


@pytest.mark.parametrize("fill", ["default", "zero"])
def test_crops_are_padded_with_the_mean_colour_by_default_and_black_if_asked(fill):
    """The padding is the training images' mean colour (0 after normalisation) unless crop_fill: zero.

    Black padding cost S=2 and S=4 ResNet-20 about 2 points of test accuracy on the CIFAR-10
    subset and S=1 nothing (result file ablation, benchmarks/results/): it is the default no more.
    """
    images = random_images(64)
    norm = Normalization.of(images)
    settings = cifar_settings(hflip=False, **({} if fill == "default" else {"crop_fill": fill}))
    views = augment(images, 2, settings, generator(), norm)
    padding_value = torch.zeros(3) if fill == "default" else -torch.tensor(norm.mean) / torch.tensor(norm.std)
    # A view's top-left pixel lies in the padding where its crop starts above or left of the image.
    corners = views[..., 0, 0].flatten(0, 1)  # [S * B, C]
    in_padding = (corners - padding_value).abs().amax(-1) < 0.01
    assert 0.5 < in_padding.float().mean() < 1.0  # (1 - (5/9)^2) = 0.69 of the crops, by chance


def test_mean_fill_pads_with_the_mean_colour_per_channel():
    images = random_images(5)
    norm = Normalization.of(images)
    fill = norm.mean_pixel()
    corner = torch.zeros(5, dtype=torch.long)
    out = crop_flip(images, corner, corner, torch.zeros(5, dtype=torch.bool), padding=4, fill=fill)
    assert torch.equal(out[..., 4:, 4:], images[..., :28, :28])
    border = torch.ones(32, 32, dtype=torch.bool)
    border[4:, 4:] = False
    assert torch.equal(out[..., border], fill.view(1, 3, 1).expand(5, 3, int(border.sum())))


def test_same_seed_gives_the_same_views():
    images = random_images(4)
    norm = Normalization.of(images)
    config = cifar_settings(random_erasing=0.5, autoaugment=True)
    first = augment(images, 2, config, generator(7), norm)
    assert torch.equal(first, augment(images, 2, config, generator(7), norm))
    assert not torch.equal(first, augment(images, 2, config, generator(8), norm))


def test_auto_augment_is_seeded_and_leaves_the_global_random_state_alone():
    images = random_images(4)
    state = torch.get_rng_state()
    out = auto_augment(images, generator(1))
    assert torch.equal(torch.get_rng_state(), state)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    assert torch.equal(out, auto_augment(images, generator(1)))


def test_random_erasing_fills_one_rectangle_per_image():
    images = torch.randn(16, 3, 32, 32)
    out = random_erase(images, p=1.0, generator=generator())
    erased = 0
    for before, after in zip(images, out):
        changed = (before != after).any(0)
        if not changed.any():
            continue
        erased += 1
        rows, columns = changed.any(1).nonzero()[:, 0], changed.any(0).nonzero()[:, 0]
        box = (slice(rows.min(), rows.max() + 1), slice(columns.min(), columns.max() + 1))
        assert changed[box].all() and changed.sum() == changed[box].numel()
        assert (after[:, box[0], box[1]] == 0).all()
        assert 0.02 * 1024 * 0.5 <= changed.sum() <= 0.33 * 1024 * 1.1
    assert erased >= 14
    assert torch.equal(random_erase(images, p=0.0, generator=generator()), images)


def test_mixup_mixes_every_member_with_one_lambda_and_permutation():
    views = torch.randn(3, 8, 3, 4, 4)
    labels = torch.arange(8)
    mixed, y_a, y_b, lam, perm = mixup(views, labels, alpha=0.2, generator=generator())
    assert 0 <= lam <= 1
    assert torch.allclose(mixed, lam * views + (1 - lam) * views[:, perm])
    assert torch.equal(y_a, labels) and torch.equal(y_b, labels[perm]) and mixed.is_contiguous()
    assert mixup(views, labels, 0.2, generator()).lam == lam


@pytest.mark.skipif(not CIFAR_SUBSET.is_file(), reason=f"real CIFAR-10 subset not found at {CIFAR_SUBSET}")
def test_real_cifar10_subset_trains_through_the_whole_path():
    config = cifar_settings(batch_size=128, random_erasing=0.5)
    data = prepare_data(f"npz:{CIFAR_SUBSET}", config)
    assert (data.train.num_samples, data.val.num_samples, data.test.num_samples) == (4577, 508, 1017)
    assert all(0.4 < mean < 0.55 for mean in data.normalization.mean)
    images, labels = next(iter(data.train))
    views = augment(images, 4, config, generator(), data.normalization)
    assert views.shape == (4, 128, 3, 32, 32) and views.is_contiguous()
    plain = augment(images, 1, replace(config, crop_padding=0, hflip=False, random_erasing=0.0), generator(),
                    data.normalization)
    assert abs(plain.mean().item()) < 0.2


def test_an_animated_gif_decodes_to_its_first_frame_in_rgb(tmp_path):
    """TorchCodec (as torchvision did) decodes an animated image to [N, C, H, W]: the loader takes frame 1."""
    from PIL import Image

    from splitsearch.data.stream import decode

    frames = [Image.fromarray(np.full((6, 8), value, dtype=np.uint8), mode="L").convert("P") for value in (10, 200)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:], duration=50, loop=0)
    image = decode(str(tmp_path / "anim.gif"))
    assert image.shape == (3, 6, 8) and image.dtype == torch.uint8
    assert image.unique().tolist() == [10]
