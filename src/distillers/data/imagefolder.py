"""Your own images: ``--dataset imagefolder --data-dir DIR`` with ``DIR/train/<class>/*`` and ``DIR/val/<class>/*``.

torchvision ``ImageFolder`` semantics: classes are the sorted folder names of ``train/`` (``val/`` may lack some,
never add one), files with an image extension are listed by torchvision's ``make_dataset``, so labels equal
``ImageFolder``'s; the class names are kept (``classes``) and recorded in config.json. ``--input-size`` sets the
side the models see (default 32). Transforms: at 32 px the CIFAR pipeline (images resized to 32x32, then
``RandomCrop(32, padding=4)`` + flip), decoded once into one uint8 array when it takes at most ``DECODE_LIMIT``
bytes, so the device-resident data path (``--data-path auto|gpu``) can hold it; larger sizes use
``RandomResizedCrop`` + flip for training and ``Resize(size / 0.875)`` + ``CenterCrop`` for evaluation, decoding each
file on access. Errors, each one line: a missing ``train``/``val`` split, no class folders, a class folder without
images, a ``val`` class unknown to ``train``, and a corrupt image (named; we stop rather than skip, so the data a run
trains on is always the whole folder).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from torchvision import transforms as T
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

from distillers.data import transforms
from distillers.data.base import DATASETS, ArrayImages, DatasetSpec, FileImages, LabelledImages, one_line
from distillers.errors import UserError

NAME = "imagefolder"
SMALL_SIDE = 32  # at this size and below: the CIFAR pipeline on images decoded once into an array
DECODE_LIMIT = 2 * 1024**3  # bytes of decoded uint8 pixels kept in memory (and on the device when it fits)
MEAN: transforms.Stats = (0.485, 0.456, 0.406)  # ImageNet statistics: what pretrained timm/torchvision models use
STD: transforms.Stats = (0.229, 0.224, 0.225)
LAYOUT = "DIR/train/<class>/<image> and DIR/val/<class>/<image>"


class FolderArray(ArrayImages):
    """Decoded images (N, S, S, 3) with their class names and files (for messages)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, classes: list[str], paths: list[str]) -> None:
        super().__init__(images, labels)
        self.classes, self.paths = classes, paths


@dataclass(frozen=True)
class ImageFolderSpec(DatasetSpec):
    """A ``DatasetSpec`` for a user's folder: the pipeline follows ``input_size`` (see the module docstring)."""

    def train_transform(self) -> transforms.Transform:
        if self.input_size <= SMALL_SIDE:
            return transforms.train_transform(self.mean, self.std, self.input_size, self.padding, self.flip)
        return T.Compose([T.RandomResizedCrop(self.input_size), T.RandomHorizontalFlip(), T.ToTensor(),
                          T.Normalize(self.mean, self.std)])

    def test_transform(self) -> transforms.Transform:
        if self.input_size <= SMALL_SIDE:
            return transforms.test_transform(self.mean, self.std)
        return T.Compose([T.Resize(round(self.input_size / 0.875)), T.CenterCrop(self.input_size), T.ToTensor(),
                          T.Normalize(self.mean, self.std)])

    def ensure(self, data_dir: str | Path, download: bool = False) -> Path:
        data_dir = Path(data_dir).expanduser()
        for split in ("train", "val"):
            if not (data_dir / split).is_dir():
                refused = " (--download cannot fetch your own images)" if download else ""
                raise UserError(f"{data_dir / split} does not exist{refused}; --dataset imagefolder needs {LAYOUT} "
                                f"with DIR = --data-dir")
        return data_dir

    def load(self, data_dir: str | Path, train: bool, download: bool = False) -> LabelledImages:
        return read_folder(self.ensure(data_dir, download), train, self.input_size)


def with_input_size(spec: DatasetSpec, input_size: int | None) -> DatasetSpec:
    """``spec`` for ``--input-size``: folder datasets take any side; the others keep their own (one line if not)."""
    if input_size is None or input_size == spec.input_size:
        return spec
    if not isinstance(spec, ImageFolderSpec):
        raise UserError(f"--input-size {input_size} applies to --dataset {NAME}; {spec.title} images are "
                        f"{spec.input_size} px")
    if input_size < 8:
        raise UserError(f"--input-size must be at least 8 pixels, got {input_size}")
    return dataclasses.replace(spec, input_size=input_size, read=lambda root, train: read_folder(root, train,
                                                                                                  input_size))


def _class_folders(folder: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())


def list_split(root: Path, train: bool) -> tuple[list[str], np.ndarray, list[str]]:
    """``(paths, labels, classes)`` of a split, labels indexing the sorted class folders of ``train/``."""
    classes = _class_folders(root / "train")
    if not classes:
        raise UserError(f"{root / 'train'} has no class folders; expected {LAYOUT}")
    split = root / ("train" if train else "val")
    unknown = sorted(set(_class_folders(split)) - set(classes))
    if unknown:
        raise UserError(f"{split} has class folders that {root / 'train'} lacks ({', '.join(unknown[:3])}); val may "
                        f"only hold classes of train")
    samples = make_dataset(str(split), {name: i for i, name in enumerate(classes)}, extensions=IMG_EXTENSIONS,
                           allow_empty=True)
    present = {label for _, label in samples}
    empty = [name for i, name in enumerate(classes) if i not in present and (split / name).is_dir()]
    if train and len(present) < len(classes):
        empty = [name for i, name in enumerate(classes) if i not in present]
    if empty:
        raise UserError(f"class folder {split / empty[0]} holds no images (extensions: {', '.join(IMG_EXTENSIONS)})"
                        f"{f'; {len(empty) - 1} more are empty' if len(empty) > 1 else ''}; add images or remove it")
    if not samples:
        raise UserError(f"{split} holds no images in class folders; expected {LAYOUT}")
    return [path for path, _ in samples], np.array([label for _, label in samples], dtype=np.int64), classes


def decode(path: str, side: int | None = None) -> Image.Image:
    """Open an image as RGB (resized to ``side`` x ``side`` when given); a corrupt file is one line naming it."""
    try:
        with Image.open(path) as handle:
            image = handle.convert("RGB")
        return image.resize((side, side), Image.BILINEAR) if side else image
    except (OSError, SyntaxError, ValueError) as error:
        raise UserError(f"cannot read image {path} ({one_line(error)}); the file is corrupt: replace or remove it") \
            from error


def read_folder(root: Path, train: bool, input_size: int = SMALL_SIDE) -> LabelledImages:
    """A split of the folder: decoded into one array at small sizes (when it fits ``DECODE_LIMIT``), else files."""
    paths, labels, classes = list_split(Path(root), train)
    if input_size <= SMALL_SIDE and len(paths) * input_size * input_size * 3 <= DECODE_LIMIT:
        images = np.stack([np.asarray(decode(path, input_size), dtype=np.uint8) for path in paths])
        return FolderArray(images, labels, classes, paths)
    for path in paths[:1]:
        decode(path)  # a folder of unreadable files fails here, not in a DataLoader worker mid-epoch
    return FileImages(paths, labels, classes=classes)


def class_names(dataset: object) -> dict[str, list[str]]:
    """``{"classes": [...]}`` for config.json when the data has named classes (folders), else ``{}``."""
    base = getattr(dataset, "base", dataset)
    classes = getattr(base, "classes", None)
    return {"classes": list(classes)} if classes else {}


def _missing(data_dir: Path) -> Path | None:
    return next((data_dir / split for split in ("train", "val") if not (data_dir / split).is_dir()), None)


# num_classes 0: the class count is the number of class folders (load_datasets reads ``classes``).
DATASETS.register(NAME, "image_folder")(ImageFolderSpec(
    name=NAME, title="image folder", num_classes=0, input_size=SMALL_SIDE, mean=MEAN, std=STD,
    read=lambda root, train: read_folder(root, train), missing=_missing, layout=LAYOUT))
