"""TinyImageNet-200 (64x64 JPEGs, 200 classes) as the seed uses it for transfer: train/ and val/ by class.

Classes are the sorted folder names of ``train/`` (``ImageFolder``'s order, so heads match the seed's). The
official archive keeps validation images flat in ``val/images`` with their classes in ``val/val_annotations.txt``;
``prepare_tiny_imagenet_val`` moves them into ``val/<wnid>/`` as the seed's ``get_tinyimagenet.sh`` does. The
reader accepts either layout (or a half-moved one), so an interrupted rearrangement never breaks loading.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from distillers.data import transforms
from distillers.data.base import DATASETS, DatasetSpec, FileImages, first_missing
from distillers.data.download import fetch_archive
from distillers.errors import UserError

URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
FOLDER = "tiny-imagenet-200"
ANNOTATIONS = "val_annotations.txt"
EXTENSIONS = (".jpeg", ".jpg", ".png")
NUM_CLASSES = 200
INPUT_SIZE = 32  # the seed's transfer resolution (Resize((32, 32)) before augmentation)


def read_val_annotations(root: str | Path) -> list[tuple[str, str]]:
    """``(file name, wnid)`` pairs of ``<root>/val/val_annotations.txt`` (tab-separated, boxes ignored)."""
    path = Path(root) / "val" / ANNOTATIONS
    pairs = []
    with open(path) as handle:
        for number, line in enumerate(handle, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 2:
                raise UserError(f"{path} line {number} is not '<file> <wnid> ...': {line.strip()!r}; the file is "
                                f"damaged, re-extract the dataset")
            pairs.append((fields[0], fields[1]))
    return pairs


def prepare_tiny_imagenet_val(root: str | Path) -> int:
    """Move ``<root>/val/images/*`` into ``<root>/val/<wnid>/`` from the annotations; return how many moved.

    ``root`` is the ``tiny-imagenet-200`` folder. Safe to rerun: files already in place are skipped and
    ``val/images`` is removed once empty.
    """
    root = Path(root)
    flat = root / "val" / "images"
    moved = 0
    for name, wnid in read_val_annotations(root):
        source, target = flat / name, root / "val" / wnid / name
        if source.exists():
            target.parent.mkdir(exist_ok=True)
            os.replace(source, target)
            moved += 1
        elif not target.exists():
            raise UserError(f"{source} (listed in {root / 'val' / ANNOTATIONS}) is missing; re-extract the dataset")
    if flat.is_dir() and not any(flat.iterdir()):
        flat.rmdir()
    return moved


def _images_under(folder: Path) -> list[str]:
    """Image files anywhere below ``folder`` (``train/<wnid>/images/`` or flattened), sorted."""
    found = [os.path.join(dirpath, name) for dirpath, _, names in os.walk(folder) for name in names
             if name.lower().endswith(EXTENSIONS)]
    return sorted(found)


def _val_samples(root: Path, class_index: dict[str, int]) -> list[tuple[str, int]]:
    val = root / "val"
    if not (val / ANNOTATIONS).exists():  # rearranged by another tool that dropped the annotations
        return [(path, class_index[wnid]) for wnid in sorted(class_index) if (val / wnid).is_dir()
                for path in _images_under(val / wnid)]
    samples = []
    for name, wnid in read_val_annotations(root):
        if wnid not in class_index:
            raise UserError(f"{val / ANNOTATIONS} names class {wnid} which has no folder in {root / 'train'}")
        moved, flat = val / wnid / name, val / "images" / name
        path = moved if moved.exists() else flat
        if not path.exists():
            raise UserError(f"validation image {name} is in neither {moved.parent} nor {flat.parent}; "
                            f"re-extract the dataset")
        samples.append((str(path), class_index[wnid]))
    return sorted(samples, key=lambda sample: (sample[1], sample[0]))  # ImageFolder's order


def read_tiny_imagenet(data_dir: str | Path, train: bool) -> FileImages:
    """The train (100,000) or val (10,000) split under ``data_dir/tiny-imagenet-200``, decoded on access."""
    root = Path(data_dir) / FOLDER
    classes = sorted(entry.name for entry in os.scandir(root / "train") if entry.is_dir())
    if len(classes) > NUM_CLASSES:
        raise UserError(f"{root / 'train'} has {len(classes)} class folders, TinyImageNet-200 has {NUM_CLASSES}; "
                        f"remove the extra folders")
    class_index = {wnid: i for i, wnid in enumerate(classes)}
    if train:
        samples = [(path, i) for wnid, i in class_index.items() for path in _images_under(root / "train" / wnid)]
    else:
        samples = _val_samples(root, class_index)
    if not samples:
        raise UserError(f"no images found in {root / ('train' if train else 'val')}; re-extract the dataset")
    return FileImages([path for path, _ in samples], np.array([label for _, label in samples], dtype=np.int64))


def _missing(data_dir: Path) -> Path | None:
    root = data_dir / FOLDER
    return first_missing(root, root / "train", root / "val")


def _download(data_dir: Path) -> None:
    fetch_archive(URL, MD5, data_dir, "TinyImageNet-200")
    prepare_tiny_imagenet_val(data_dir / FOLDER)


DATASETS.register("tinyimagenet", "tiny-imagenet")(DatasetSpec(
    name="tinyimagenet", title="TinyImageNet-200", num_classes=NUM_CLASSES, input_size=INPUT_SIZE,
    mean=transforms.TINY_IMAGENET_MEAN, std=transforms.TINY_IMAGENET_STD, read=read_tiny_imagenet,
    missing=_missing, download=_download, url=URL, resize=INPUT_SIZE,
    layout=f"{FOLDER}/train/<wnid>/images/*.JPEG and {FOLDER}/val/"))
