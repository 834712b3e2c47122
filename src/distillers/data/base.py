"""What a dataset is to distillers: a registered ``DatasetSpec`` plus in-memory or on-disk labelled images.

A spec knows its class count, input size, normalisation, transforms, where its files live under ``data_dir``
and how to download them. Readers return ``LabelledImages``: PIL images and int labels, transform applied on
access, labels as one int64 array (the CRD sampler and stratified tools read it without decoding images).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from distillers.data import transforms
from distillers.errors import UserError
from distillers.registry import Registry


class LabelledImages(Dataset):
    """Images with int64 labels; ``dataset[i]`` is ``(transform(image), label)``."""

    def __init__(self, labels: np.ndarray, transform: Callable | None = None) -> None:
        self.labels = np.ascontiguousarray(labels, dtype=np.int64)
        self.transform = transform

    def image(self, index: int) -> Image.Image:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        image = self.image(index)
        return (self.transform(image) if self.transform is not None else image), int(self.labels[index])


class ArrayImages(LabelledImages):
    """Images held as one ``(N, H, W, 3)`` uint8 array (CIFAR, STL-10, digits): no decoding per sample."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable | None = None) -> None:
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or len(images) != len(labels):
            raise ValueError(f"expected (N, H, W, 3) uint8 images matching {len(labels)} labels, got "
                             f"{images.dtype} {images.shape}")
        super().__init__(labels, transform)
        self.images = images

    def image(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index])


class FileImages(LabelledImages):
    """Images decoded from files on access (TinyImageNet's JPEGs), converted to RGB; ``classes`` names the labels of
    a folder dataset (``classes[label]`` is the label's folder), recorded in config.json."""

    def __init__(self, paths: list[str], labels: np.ndarray, transform: Callable | None = None,
                 classes: list[str] | None = None) -> None:
        super().__init__(labels, transform)
        self.paths = paths
        self.classes = classes

    def image(self, index: int) -> Image.Image:
        path = self.paths[index]
        try:
            with Image.open(path) as handle:
                return handle.convert("RGB")
        except (OSError, SyntaxError, ValueError) as error:  # PIL raises these for truncated or foreign files
            raise UserError(f"cannot read image {path} ({one_line(error)}); the file is corrupt: re-extract the "
                            f"dataset") from error


@dataclass(frozen=True)
class DatasetSpec:
    """One registered dataset: facts, transforms, where its files are, and how to get them."""

    name: str
    title: str  # as people write it, for messages: "CIFAR-100"
    num_classes: int
    input_size: int  # side of the square images the models see
    mean: transforms.Stats
    std: transforms.Stats
    read: Callable[[Path, bool], LabelledImages]  # (data_dir, train) -> images without transform
    missing: Callable[[Path], Path | None]  # the first required file or folder that is absent, else None
    download: Callable[[Path], None] | None = None  # fetch + verify + extract into data_dir
    url: str = ""  # where the files come from, for the missing-dataset message
    layout: str = ""  # what must exist under data_dir, for the missing-dataset message
    resize: int | None = None  # resize inside the transforms (images stored at another size)
    padding: int = 4  # RandomCrop padding of the train augmentation
    flip: bool = True  # RandomHorizontalFlip in the train augmentation (not for digits)

    def train_transform(self) -> transforms.Transform:
        return transforms.train_transform(self.mean, self.std, self.input_size, self.padding, self.flip,
                                          self.resize)

    def test_transform(self) -> transforms.Transform:
        return transforms.test_transform(self.mean, self.std, self.resize)

    def ensure(self, data_dir: str | Path, download: bool = False) -> Path:
        """Check the files are there (downloading them first if asked and needed); return ``data_dir``."""
        data_dir = Path(data_dir).expanduser()
        absent = self.missing(data_dir)
        if absent is None:
            return data_dir
        if not download or self.download is None:
            top = absent.relative_to(data_dir).parts[0]
            nested = f" (--data-dir is the folder that contains {top}: try {data_dir.parent})" \
                if data_dir.name == top else ""
            raise UserError(f"{self.title} not found: {absent} does not exist{nested}; pass --download to fetch it, "
                            f"or download {self.url} and extract it into {data_dir} so that {self.layout} exists")
        self.download(data_dir)
        absent = self.missing(data_dir)
        if absent is not None:
            raise UserError(f"{self.title} was downloaded but {absent} is still missing; expected {self.layout} "
                            f"under {data_dir}")
        return data_dir

    def load(self, data_dir: str | Path, train: bool, download: bool = False) -> LabelledImages:
        """The train or test split without transforms (set ``.transform`` to use it for training)."""
        return self.read(self.ensure(data_dir, download), train)


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def first_missing(*paths: Path) -> Path | None:
    """The first of ``paths`` that does not exist (the helper every ``DatasetSpec.missing`` uses)."""
    return next((path for path in paths if not path.exists()), None)


def one_line(error: BaseException) -> str:
    """An exception's text on one line, for UserError messages."""
    return " ".join(str(error).split()) or type(error).__name__
