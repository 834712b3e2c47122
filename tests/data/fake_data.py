"""Tiny datasets written in the REAL on-disk formats, so tests run the real readers (no network, no md5).

Other suites use these too: ``from data.fake_data import write_cifar100`` (``tests/`` is on ``sys.path``).
Every writer takes the ``data_dir`` a user would pass (``--data-dir``) and returns what it wrote:

- ``write_cifar100(root, n_train, n_test, seed)``: ``cifar-100-python/{train,test,meta}`` pickles with the
  official keys (``data`` N x 3072 uint8, ``fine_labels``, ``coarse_labels``, ``filenames``, ``batch_label``).
- ``write_cifar10(root, ...)``: ``cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``.
- ``write_stl10(root, ...)``: ``stl10_binary/{train,test}_{X,y}.bin`` (column-major 3x96x96, labels 1..10),
  ``class_names.txt``, ``fold_indices.txt``.
- ``write_tiny_imagenet(root, ...)``: the official zip's tree, before rearrangement: ``wnids.txt``,
  ``words.txt``, ``train/<wnid>/images/*.JPEG`` + ``<wnid>_boxes.txt``, ``val/images`` +
  ``val/val_annotations.txt``, ``test/images``.
Labels are balanced (``i % num_classes``, shuffled with ``seed``); pixels are uniform random uint8.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass
class FakeSplit:
    """What was written for one split: ``(N, H, W, 3)`` uint8 images and 0-based int64 labels."""

    images: np.ndarray
    labels: np.ndarray


@dataclass
class FakeArrays:
    """A written array dataset (CIFAR, STL-10): pass ``root`` as ``data_dir``; ``files`` maps names to paths."""

    root: Path
    train: FakeSplit
    test: FakeSplit
    files: dict[str, Path]


@dataclass
class FakeTinyImageNet:
    """A written TinyImageNet tree; labels index ``sorted(wnids)`` (the loader's class order)."""

    root: Path  # data_dir; the dataset is root / "tiny-imagenet-200"
    wnids: list[str]  # in wnids.txt order (not sorted, as in the real file)
    train_paths: list[Path]
    train_labels: np.ndarray
    val_names: list[str]  # file names in val/images, in val_annotations.txt order
    val_labels: np.ndarray

    @property
    def folder(self) -> Path:
        return self.root / "tiny-imagenet-200"


def _split(rng: np.random.Generator, n: int, num_classes: int, side: int) -> FakeSplit:
    labels = rng.permutation(np.arange(n) % num_classes).astype(np.int64)
    return FakeSplit(rng.integers(0, 256, size=(n, side, side, 3), dtype=np.uint8), labels)


def _cifar_rows(images: np.ndarray) -> np.ndarray:
    """``(N, 32, 32, 3)`` -> the official ``(N, 3072)`` rows: red plane, green plane, blue plane."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), 3072))


def _pickle(path: Path, payload: dict) -> Path:
    with open(path, "wb") as handle:
        pickle.dump(payload, handle, protocol=2)  # the official files are Python 2 (protocol 2) pickles
    return path


def write_cifar100(root: str | Path, n_train: int = 200, n_test: int = 100, seed: int = 0) -> FakeArrays:
    """``root/cifar-100-python`` with ``train``, ``test`` and ``meta`` in the official pickle format."""
    rng = np.random.default_rng(seed)
    train, test = _split(rng, n_train, 100, 32), _split(rng, n_test, 100, 32)
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, split in (("train", train), ("test", test)):
        fine = split.labels.tolist()
        files[name] = _pickle(folder / name, {
            "filenames": [f"image_{i}.png" for i in range(len(fine))],
            "batch_label": f"{'training' if name == 'train' else 'testing'} batch 1 of 1",
            "fine_labels": fine,
            "coarse_labels": [label // 5 for label in fine],
            "data": _cifar_rows(split.images),
        })
    files["meta"] = _pickle(folder / "meta", {"fine_label_names": [f"fine_{i}" for i in range(100)],
                                              "coarse_label_names": [f"coarse_{i}" for i in range(20)]})
    return FakeArrays(Path(root), train, test, files)


def write_cifar10(root: str | Path, n_train: int = 50, n_test: int = 20, seed: int = 0) -> FakeArrays:
    """``root/cifar-10-batches-py``: five ``data_batch_i`` (train split in order), ``test_batch``, ``batches.meta``."""
    rng = np.random.default_rng(seed)
    train, test = _split(rng, n_train, 10, 32), _split(rng, n_test, 10, 32)
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    chunks = np.array_split(np.arange(n_train), 5)
    batches = [(f"data_batch_{i + 1}", f"training batch {i + 1} of 5", chunk) for i, chunk in enumerate(chunks)]
    for name, label, rows in batches + [("test_batch", "testing batch 1 of 1", None)]:
        split = test if rows is None else FakeSplit(train.images[rows], train.labels[rows])
        files[name] = _pickle(folder / name, {
            "batch_label": label, "labels": split.labels.tolist(), "data": _cifar_rows(split.images),
            "filenames": [f"image_{i}.png" for i in range(len(split.labels))]})
    files["batches.meta"] = _pickle(folder / "batches.meta", {
        "num_cases_per_batch": max(len(c) for c in chunks), "num_vis": 3072,
        "label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]})
    return FakeArrays(Path(root), train, test, files)


def write_stl10(root: str | Path, n_train: int = 20, n_test: int = 20, seed: int = 0) -> FakeArrays:
    """``root/stl10_binary`` with the labelled splits in the official binary format (96x96 images)."""
    rng = np.random.default_rng(seed)
    train, test = _split(rng, n_train, 10, 96), _split(rng, n_test, 10, 96)
    folder = Path(root) / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, split in (("train", train), ("test", test)):
        # Official order: per image the R, G, B planes, each plane column-major.
        files[f"{name}_X.bin"] = folder / f"{name}_X.bin"
        files[f"{name}_X.bin"].write_bytes(np.ascontiguousarray(split.images.transpose(0, 3, 2, 1)).tobytes())
        files[f"{name}_y.bin"] = folder / f"{name}_y.bin"
        files[f"{name}_y.bin"].write_bytes((split.labels + 1).astype(np.uint8).tobytes())
    names = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (folder / "class_names.txt").write_text("\n".join(names) + "\n")
    folds = np.array_split(rng.permutation(n_train), 10)
    (folder / "fold_indices.txt").write_text("".join(" ".join(map(str, f)) + " \n" for f in folds))
    return FakeArrays(Path(root), train, test, files)


def write_tiny_imagenet(root: str | Path, n_classes: int = 3, n_train_per_class: int = 4,
                        n_val_per_class: int = 2, n_test: int = 2, seed: int = 0) -> FakeTinyImageNet:
    """``root/tiny-imagenet-200`` as the official zip extracts it (64x64 JPEGs, val not yet rearranged).

    The first training image is saved greyscale, as a few real ones are (the loader must convert to RGB).
    """
    rng = np.random.default_rng(seed)
    folder = Path(root) / "tiny-imagenet-200"
    wnids = [f"n{value:08d}" for value in rng.choice(10**8, n_classes, replace=False)]
    order = {wnid: i for i, wnid in enumerate(sorted(wnids))}
    (folder / "val" / "images").mkdir(parents=True, exist_ok=True)
    (folder / "test" / "images").mkdir(parents=True, exist_ok=True)
    (folder / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    (folder / "words.txt").write_text("".join(f"{w}\tthing number {i}\n" for i, w in enumerate(wnids)))

    def save(path: Path, grey: bool = False) -> None:
        pixels = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
        image = Image.fromarray(pixels)
        (image.convert("L") if grey else image).save(path, format="JPEG", quality=95)

    train_paths, train_labels = [], []
    for wnid in wnids:
        images = folder / "train" / wnid / "images"
        images.mkdir(parents=True)
        boxes = []
        for j in range(n_train_per_class):
            path = images / f"{wnid}_{j}.JPEG"
            save(path, grey=not train_paths)
            train_paths.append(path)
            train_labels.append(order[wnid])
            boxes.append(f"{path.name}\t0\t0\t63\t63\n")
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("".join(boxes))
    val_wnids = [wnid for wnid in wnids for _ in range(n_val_per_class)]
    val_wnids = [val_wnids[i] for i in rng.permutation(len(val_wnids))]
    val_names = [f"val_{k}.JPEG" for k in range(len(val_wnids))]
    for name in val_names:
        save(folder / "val" / "images" / name)
    (folder / "val" / "val_annotations.txt").write_text(
        "".join(f"{name}\t{wnid}\t1\t2\t60\t61\n" for name, wnid in zip(val_names, val_wnids)))
    for k in range(n_test):
        save(folder / "test" / "images" / f"test_{k}.JPEG")
    return FakeTinyImageNet(Path(root), wnids, train_paths, np.array(train_labels, dtype=np.int64), val_names,
                            np.array([order[w] for w in val_wnids], dtype=np.int64))


def decode_rgb(path: str | Path) -> np.ndarray:
    """A written JPEG as the loader sees it: decoded, converted to RGB, ``(H, W, 3)`` uint8."""
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))
