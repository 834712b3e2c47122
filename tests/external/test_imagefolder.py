"""The ``imagefolder`` dataset on generated PNG trees: labels as torchvision's ImageFolder, pipelines by input size,
CRD sampling, the device-resident path (on CPU), and one-line errors for broken folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import ImageFolder

from distillers.data import load_datasets
from distillers.data.gpu_loader import DeviceLoader, array_source
from distillers.errors import UserError

CLASSES = ("cat", "dog", "eel")


def make_folder(root: Path, per_class: dict[str, int] | None = None, val: bool = True) -> Path:
    """``root/train/<class>/*.png`` (and ``val``) with random 40x36 RGB images."""
    rng = np.random.default_rng(0)
    splits = {"train": per_class or {name: 4 for name in CLASSES}}
    if val:
        splits["val"] = {name: 2 for name in CLASSES}
    for split, counts in splits.items():
        for name, count in counts.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return root


def test_labels_classes_and_small_pipeline(tmp_path: Path) -> None:
    root = make_folder(tmp_path)
    train, test, info = load_datasets("imagefolder", root, sample="contrast", nce_k=4)
    reference = ImageFolder(str(root / "train"))
    assert train.base.classes == reference.classes == list(CLASSES)
    assert train.labels.tolist() == [label for _, label in reference.samples]
    assert (info.num_classes, info.num_train, info.num_test, info.input_size) == (3, 12, 6, 32)
    item = train[5]
    assert item["image"].shape == (3, 32, 32) and item["contrast_index"][0] == 5
    negatives = item["contrast_index"][1:]
    assert all(train.labels[int(n)] != train.labels[5] for n in negatives)  # CRD negatives: other classes
    images, labels = array_source(train)  # decoded once at 32 px: the device-resident path can hold it
    assert images.shape == (12, 32, 32, 3) and labels.tolist() == train.labels.tolist()
    loader = DeviceLoader.from_dataset(train, 8, device="cpu", mean=info.mean, std=info.std)
    batch = next(iter(loader))
    assert batch["image"].shape == (8, 3, 32, 32) and batch["contrast_index"].shape == (8, 5)


def test_input_size_uses_resized_crops(tmp_path: Path) -> None:
    train, test, info = load_datasets("imagefolder", make_folder(tmp_path), input_size=48)
    assert info.input_size == 48 and array_source(train) is None  # files decoded on access
    assert train[0]["image"].shape == test[0]["image"].shape == (3, 48, 48)
    with pytest.raises(UserError, match="--input-size 48 applies to --dataset imagefolder"):
        load_datasets("digits", tmp_path, input_size=48)


def test_missing_split_is_one_line(tmp_path: Path) -> None:
    root = make_folder(tmp_path, val=False)
    with pytest.raises(UserError) as error:
        load_datasets("imagefolder", root)
    assert str(error.value).startswith(f"{root / 'val'} does not exist") and "\n" not in str(error.value)


def test_empty_class_is_one_line(tmp_path: Path) -> None:
    root = make_folder(tmp_path, {"cat": 2, "dog": 0, "eel": 2})
    with pytest.raises(UserError, match=r"class folder .*train/dog holds no images"):
        load_datasets("imagefolder", root)


def test_val_class_unknown_to_train_is_one_line(tmp_path: Path) -> None:
    root = make_folder(tmp_path)
    (root / "val" / "fox").mkdir()
    Image.new("RGB", (8, 8)).save(root / "val" / "fox" / "0.png")
    with pytest.raises(UserError, match="val may only hold classes of train"):
        load_datasets("imagefolder", root)


@pytest.mark.parametrize("input_size", [32, 48])
def test_corrupt_image_names_the_file(tmp_path: Path, input_size: int) -> None:
    root = make_folder(tmp_path)
    broken = root / "train" / "cat" / "0.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(UserError) as error:
        train, _, _ = load_datasets("imagefolder", root, input_size=input_size)
        torch.stack([train[i]["image"] for i in range(len(train))])
    assert str(broken) in str(error.value) and "\n" not in str(error.value)
