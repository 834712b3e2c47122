"""ImageNet (ILSVRC-2012, 1000 classes) from an ImageFolder tree, with the standard 224x224 pipelines.

Layout under ``data_dir``: ``imagenet/train/<wnid>/*.JPEG`` and ``imagenet/val/<wnid>/*.JPEG``. Classes are the
sorted folder names of ``train/`` and files are listed by torchvision's ``make_dataset``, so labels equal
``ImageFolder``'s: the order torchvision's pretrained teachers were trained with. ImageNet's licence needs an
account at image-net.org, so nothing is downloaded: the missing-dataset message says how to get and lay it out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torchvision import transforms as T
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

from distillers.data import transforms
from distillers.data.base import DATASETS, DatasetSpec, FileImages, first_missing
from distillers.errors import UserError

FOLDER = "imagenet"
NUM_CLASSES = 1000
INPUT_SIZE = 224
TEST_RESIZE = 256  # shorter side before the centre crop: 224 / 256 = 0.875, the ResNet paper's evaluation crop
MEAN: transforms.Stats = (0.485, 0.456, 0.406)
STD: transforms.Stats = (0.229, 0.224, 0.225)
URL = "https://image-net.org/download.php"
LAYOUT = f"{FOLDER}/train/<wnid>/*.JPEG and {FOLDER}/val/<wnid>/*.JPEG"
VAL_HOWTO = ("the official ILSVRC2012_img_val.tar is flat: move each image into val/<wnid>/ from the devkit's "
             "ground truth (e.g. the valprep.sh script linked from PyTorch's examples/imagenet README)")


@dataclass(frozen=True)
class ImageNetSpec(DatasetSpec):
    """A ``DatasetSpec`` with the ImageNet pipelines and a missing-dataset message for a licensed, manual download.

    Train: ``RandomResizedCrop(input_size)`` + flip; test: ``Resize(test_resize)`` + ``CenterCrop(input_size)``;
    both end in ``ToTensor`` + ``Normalize`` (torchvision's reference recipe, also mdistiller's and torchdistill's).
    """

    test_resize: int = TEST_RESIZE

    def train_transform(self) -> transforms.Transform:
        return T.Compose([T.RandomResizedCrop(self.input_size), T.RandomHorizontalFlip(), T.ToTensor(),
                          T.Normalize(self.mean, self.std)])

    def test_transform(self) -> transforms.Transform:
        return T.Compose([T.Resize(self.test_resize), T.CenterCrop(self.input_size), T.ToTensor(),
                          T.Normalize(self.mean, self.std)])

    def ensure(self, data_dir: str | Path, download: bool = False) -> Path:
        """Return ``data_dir`` if the tree is there; else say how to get it (``download`` cannot help)."""
        data_dir = Path(data_dir).expanduser()
        absent = self.missing(data_dir)
        if absent is None:
            return data_dir
        nested = f" (--data-dir is the folder that contains {FOLDER}: try {data_dir.parent})" \
            if data_dir.name == FOLDER else ""
        refused = "--download cannot fetch it: " if download else ""
        raise UserError(f"{self.title} not found: {absent} does not exist{nested}; {refused}ImageNet needs a licence, "
                        f"so download ILSVRC2012 yourself from {self.url} (free account) and lay it out as {LAYOUT} "
                        f"under {data_dir}; {VAL_HOWTO}")


def _class_folders(folder: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())


def read_imagenet(data_dir: str | Path, train: bool) -> FileImages:
    """The train or val split under ``data_dir/imagenet``, labels indexing the sorted ``train/`` folders."""
    root = Path(data_dir) / FOLDER
    classes = _class_folders(root / "train")
    if len(classes) > NUM_CLASSES:
        raise UserError(f"{root / 'train'} has {len(classes)} class folders, ImageNet has {NUM_CLASSES}; remove the "
                        f"extra folders")
    if not classes:
        archives = [name for name in os.listdir(root / "train") if name.endswith(".tar")]
        hint = f"it holds {len(archives)} .tar archives: extract each into train/<wnid>/" if archives else \
            f"expected {LAYOUT}"
        raise UserError(f"{root / 'train'} has no class folders; {hint}")
    split = root / ("train" if train else "val")
    if not train:
        unknown = sorted(set(_class_folders(split)) - set(classes))
        if unknown:
            raise UserError(f"{split} has class folders that {root / 'train'} lacks ({', '.join(unknown[:3])}"
                            f"{' ...' if len(unknown) > 3 else ''}); train and val must hold the same wnids")
        flat = [name for name in os.listdir(split) if name.lower().endswith(IMG_EXTENSIONS)]
        if flat:  # ImageFolder would silently skip them: the accuracy would be measured on part of val
            raise UserError(f"{split} holds {len(flat)} images outside class folders (e.g. {sorted(flat)[0]}); "
                            f"{VAL_HOWTO}")
    class_index = {wnid: i for i, wnid in enumerate(classes)}
    samples = make_dataset(str(split), class_index, extensions=IMG_EXTENSIONS, allow_empty=True)
    if not samples:
        raise UserError(f"no images found in the class folders of {split}; expected {LAYOUT}")
    if train:
        empty = sorted(set(classes) - {classes[label] for _, label in samples})
        if empty:
            raise UserError(f"{len(empty)} class folders of {split} hold no images ({', '.join(empty[:3])}"
                            f"{' ...' if len(empty) > 3 else ''}); the extraction is incomplete, extract it again")
    return FileImages([path for path, _ in samples], np.array([label for _, label in samples], dtype=np.int64),
                      classes=classes)


def _missing(data_dir: Path) -> Path | None:
    root = data_dir / FOLDER
    return first_missing(root, root / "train", root / "val")


# num_classes is ImageNet's 1000 even for a subset tree (DatasetSpec holds one fixed count; labels stay below it).
DATASETS.register("imagenet", "ilsvrc2012")(ImageNetSpec(
    name="imagenet", title="ImageNet (ILSVRC-2012)", num_classes=NUM_CLASSES, input_size=INPUT_SIZE, mean=MEAN,
    std=STD, read=read_imagenet, missing=_missing, url=URL, layout=LAYOUT))
