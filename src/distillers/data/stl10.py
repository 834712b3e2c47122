"""STL-10 (labelled train/test splits) from the official binary files, for linear-probe transfer.

torchvision's ``STL10`` checks every file's md5 on load (so no small test copy can be read), hence this reader;
the archive's md5 is verified when downloading. The seed's transfer protocol resizes the 96x96 images to 32x32
(``transforms.Resize((32, 32))``, bilinear, before the CIFAR-style augmentation); we resize once when loading,
with the same PIL call, which gives identical pixels and keeps 8x less in memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from distillers.data import transforms
from distillers.data.base import DATASETS, ArrayImages, DatasetSpec, first_missing
from distillers.data.download import fetch_archive
from distillers.errors import UserError

URL = "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"
MD5 = "91f7769df0f17e558f3565bffb0c7dfb"  # of the .tar.gz archive (torchvision's value)
FOLDER = "stl10_binary"
SIDE = 96
IMAGE_BYTES = 3 * SIDE * SIDE
NUM_CLASSES = 10
INPUT_SIZE = 32  # the seed's transfer resolution


def _files(data_dir: Path, train: bool) -> tuple[Path, Path]:
    split = "train" if train else "test"
    return data_dir / FOLDER / f"{split}_X.bin", data_dir / FOLDER / f"{split}_y.bin"


def read_stl10_split(data_dir: str | Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """Native ``(N, 96, 96, 3)`` uint8 images and 0-based int64 labels; UserError names a damaged file."""
    images_path, labels_path = _files(Path(data_dir), train)
    raw = np.fromfile(images_path, dtype=np.uint8)
    if raw.size == 0 or raw.size % IMAGE_BYTES:
        raise UserError(f"{images_path} is truncated: {raw.size} bytes is not a whole number of 3x96x96 images; "
                        f"delete it and download again with --download")
    # Each image is stored plane by plane (R, G, B), each plane column-major (the files were written by Matlab).
    images = np.ascontiguousarray(raw.reshape(-1, 3, SIDE, SIDE).transpose(0, 3, 2, 1))
    labels = np.fromfile(labels_path, dtype=np.uint8).astype(np.int64) - 1  # stored as 1..10
    if len(labels) != len(images):
        raise UserError(f"{labels_path} holds {len(labels)} labels for {len(images)} images in {images_path}; "
                        f"delete both and download again with --download")
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
        raise UserError(f"{labels_path} has labels outside 1..{NUM_CLASSES}; it is not an STL-10 label file")
    return images, labels


def resize_images(images: np.ndarray, size: int) -> np.ndarray:
    """Resize ``(N, H, W, 3)`` uint8 images exactly as ``transforms.Resize((size, size))`` does on PIL images."""
    return np.stack([np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR)) for image in images])


def read_stl10(data_dir: str | Path, train: bool) -> ArrayImages:
    """The train (5,000) or test (8,000) split, resized to 32x32 as the seed's transfer loader does."""
    images, labels = read_stl10_split(data_dir, train)
    return ArrayImages(resize_images(images, INPUT_SIZE), labels)


def _missing(data_dir: Path) -> Path | None:
    return first_missing(data_dir / FOLDER, *_files(data_dir, True), *_files(data_dir, False))


def _download(data_dir: Path) -> None:
    fetch_archive(URL, MD5, data_dir, "STL-10")


DATASETS.register("stl10")(DatasetSpec(
    name="stl10", title="STL-10", num_classes=NUM_CLASSES, input_size=INPUT_SIZE, mean=transforms.STL10_MEAN,
    std=transforms.STL10_STD, read=read_stl10, missing=_missing, download=_download, url=URL,
    layout=f"{FOLDER}/{{train_X.bin,train_y.bin,test_X.bin,test_y.bin}}"))
