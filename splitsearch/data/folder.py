"""The index of an image folder: class folders -> labels, image files checked before any training.

Labels come from the sorted names of the class folders, as in torchvision's ``ImageFolder``, so
a model trained here predicts the same class numbers as one trained with torchvision.  The index
holds paths and labels only; nothing is decoded here, so indexing ImageNet costs a directory walk
and a few bytes read per file, not 150 GB of pixels.

What a folder may hold, and what happens to it (the promise of issue 23, decided here):

* Files whose extension is not an image's (``README.txt``, ``.DS_Store``, hidden files) are
  skipped, as torchvision skips them.
* A file with an image's extension that does not start with an image format's signature, or a
  JPEG that does not end with the JPEG end marker (a truncated download), is refused before
  training, naming the file: found up front it costs a few bytes per file, found mid-epoch it
  costs the epoch.  A file that passes and still fails to decode is refused by the loader,
  naming it, when it is first read.
* A class folder without images is refused, naming it: skipping it would renumber every class
  after it and silently change what the labels mean.
* Grey-scale, CMYK and palette images are converted to RGB when decoded; images of any size
  are accepted (the crops and resizes bring them to the training size).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from splitsearch.data.specs import IMAGE_EXTENSIONS, DataError
# Leading bytes of the formats above.  WEBP is RIFF....WEBP: checked at offset 8 below.
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"RIFF")
_JPEG_END = b"\xff\xd9"
# Enough threads to overlap the small reads of a large folder on a network file system.
_SCAN_THREADS = 16


@dataclass(frozen=True)
class FileSplit:
    """Image files and their labels ``[N]`` int64: a split that is decoded when it is read.

    Indexable and carved like :class:`~splitsearch.data.loading.ImageSplit`, with the same
    seeded permutations, so the validation and test images of a folder are the same ones
    whether it is streamed or held in memory.
    """

    paths: tuple[str, ...]
    labels: Tensor

    def __post_init__(self) -> None:
        if self.labels.dtype != torch.int64 or self.labels.shape != (len(self.paths),):
            raise ValueError(f"labels must be int64 [{len(self.paths)}], got {self.labels.dtype} "
                             f"{tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: Tensor) -> FileSplit:
        return FileSplit(tuple(self.paths[index] for index in indices.tolist()), self.labels[indices])

    def carve(self, count: int, seed: int) -> tuple[FileSplit, FileSplit]:
        """``(rest, held)``: ``count`` files picked by a permutation seeded with ``seed``, and the others."""
        order = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))
        return self.subset(order[count:]), self.subset(order[:count])


@dataclass(frozen=True)
class FolderIndex:
    """The images of one folder: a :class:`FileSplit` and the class names its labels number."""

    files: FileSplit
    classes: tuple[str, ...]


def index_folder(root: Path, classes: tuple[str, ...] | None = None) -> FolderIndex:
    """Index ``root/<class>/<image>``; with ``classes``, exactly those class folders in that order.

    ``classes`` is how an ImageNet ``val/`` folder gets the labels of ``train/``.

    Raises:
        DataError: naming the folder or file: a missing folder, a class folder without images,
            a file that is not the image its name says, a truncated JPEG.
    """
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    found = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith("."))
    if classes is None:
        classes = tuple(found)
    elif missing := sorted(set(classes) - set(found)):
        raise DataError(f"{root} lacks the class folder(s) {', '.join(missing[:3])} that the training images have")
    if not classes:
        raise DataError(f"{root} has no class sub-folders")
    paths: list[str] = []
    labels: list[int] = []
    for label, name in enumerate(classes):
        images = sorted(entry.path for entry in os.scandir(root / name)
                        if entry.is_file() and not entry.name.startswith(".")
                        and entry.name.lower().endswith(IMAGE_EXTENSIONS))
        if not images:
            raise DataError(f"class folder {root / name} holds no images: remove it or add images "
                            "(labels follow the sorted folder names, so skipping it would renumber the classes)")
        paths += images
        labels += [label] * len(images)
    with ThreadPoolExecutor(_SCAN_THREADS) as pool:
        for problem in pool.map(_file_problem, paths):
            if problem is not None:
                raise DataError(problem)
    return FolderIndex(FileSplit(tuple(paths), torch.tensor(labels, dtype=torch.int64)), classes)


def _file_problem(path: str) -> str | None:
    """Why ``path`` is not a readable image, from its first and last bytes; None if it looks whole."""
    try:
        with open(path, "rb") as file:
            head = file.read(12)
            file.seek(max(0, os.fstat(file.fileno()).st_size - 64))
            tail = file.read()
    except OSError as error:
        return f"cannot read the image file {path}: {error.strerror}"
    if not head.startswith(_SIGNATURES) or (head.startswith(b"RIFF") and head[8:12] != b"WEBP"):
        return f"{path} is not an image (its bytes are no JPEG, PNG, GIF, WEBP or BMP): remove or replace it"
    # Some writers pad a JPEG after its end marker; a missing marker means the file was cut short.
    if head.startswith(b"\xff\xd8\xff") and _JPEG_END not in tail.rstrip(b"\x00\r\n "):
        return f"{path} is a truncated JPEG (no end marker): remove it or download it again"
    return None
