"""CIFAR-100 and CIFAR-10 from the official python pickles, read by our own loader.

torchvision's CIFAR classes refuse files whose md5 differs from the official one (so no small test copy can
be read); we verify the archive's md5 when downloading instead, and check shapes and labels when reading.
The pickles are unpickled with an allow-list (numpy arrays and plain containers only): a file in ``data_dir``
is untrusted input, like a checkpoint.
"""

from __future__ import annotations

import codecs
import pickle
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from distillers.data import transforms
from distillers.data.base import DATASETS, ArrayImages, DatasetSpec, first_missing, one_line
from distillers.data.download import fetch_archive
from distillers.errors import UserError


@dataclass(frozen=True)
class CifarFormat:
    """Where one CIFAR variant keeps its batches and labels."""

    title: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    num_classes: int
    url: str
    md5: str  # of the .tar.gz archive (torchvision's value)


CIFAR100 = CifarFormat("CIFAR-100", "cifar-100-python", ("train",), ("test",), "fine_labels", 100,
                       "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85")
CIFAR10 = CifarFormat("CIFAR-10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",),
                      "labels", 10, "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                      "c58f30108f718f92721af3b95e74349a")

# The only globals an official (Python 2) or re-saved (Python 3, numpy 1 or 2) CIFAR pickle refers to, mapped
# to this numpy's objects (numpy 2 moved ``numpy.core`` to ``numpy._core``; the reduce hooks find both).
_RECONSTRUCT = np.zeros(1).__reduce__()[0]
_FROMBUFFER = np.zeros(1).__reduce_ex__(5)[0]
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): codecs.encode,
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT, ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.numeric", "_frombuffer"): _FROMBUFFER, ("numpy._core.numeric", "_frombuffer"): _FROMBUFFER,
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles containers and numpy arrays only; any other object in the file is refused, never called."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name}") from None


def read_cifar_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One official batch file: ``(N, 32, 32, 3)`` uint8 images and int64 labels; UserError names a bad file."""
    try:
        with open(path, "rb") as handle:
            entry = _ArrayUnpickler(handle, encoding="latin1").load()
        data, labels = entry["data"], np.asarray(entry[label_key], dtype=np.int64)
    # A damaged pickle can fail in many ways (EOFError, UnpicklingError, KeyError, ValueError, ...): all of them
    # mean "this file is not a CIFAR batch", which the user fixes by downloading it again.
    except Exception as error:  # noqa: BLE001
        raise UserError(f"{path} is not a readable CIFAR batch ({one_line(error)}); delete it and download "
                        f"again with --download") from error
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 \
            or labels.shape != (len(data),):
        shape = getattr(data, "shape", type(data).__name__)
        raise UserError(f"{path} is not a CIFAR batch: expected 'data' of N x 3072 uint8 and N labels, got {shape} "
                        f"and {labels.shape[0] if labels.ndim else 'no'} labels; delete it and download again")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(f"{path} has labels outside 0..{num_classes - 1}; it belongs to another dataset")
    # Rows are 1024 red, 1024 green, 1024 blue values, each a row-major 32 x 32 plane.
    images = np.ascontiguousarray(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels


def read_cifar(fmt: CifarFormat, data_dir: str | Path, train: bool) -> ArrayImages:
    """The train or test split of a CIFAR variant under ``data_dir`` (all batches concatenated in file order)."""
    folder = Path(data_dir) / fmt.folder
    parts = [read_cifar_batch(folder / name, fmt.label_key, fmt.num_classes)
             for name in (fmt.train_files if train else fmt.test_files)]
    return ArrayImages(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def _missing(fmt: CifarFormat, data_dir: Path) -> Path | None:
    folder = data_dir / fmt.folder
    return first_missing(folder, *(folder / name for name in fmt.train_files + fmt.test_files))


def _download(fmt: CifarFormat, data_dir: Path) -> None:
    fetch_archive(fmt.url, fmt.md5, data_dir, fmt.title)


def _spec(name: str, fmt: CifarFormat, mean: transforms.Stats, std: transforms.Stats, layout: str) -> DatasetSpec:
    return DatasetSpec(name=name, title=fmt.title, num_classes=fmt.num_classes, input_size=32, mean=mean, std=std,
                       read=partial(read_cifar, fmt), missing=partial(_missing, fmt),
                       download=partial(_download, fmt), url=fmt.url, layout=layout)


DATASETS.register("cifar100")(_spec("cifar100", CIFAR100, transforms.CIFAR100_MEAN, transforms.CIFAR100_STD,
                                     "cifar-100-python/{train,test}"))
DATASETS.register("cifar10")(_spec("cifar10", CIFAR10, transforms.CIFAR10_MEAN, transforms.CIFAR10_STD,
                                   "cifar-10-batches-py/{data_batch_1..5,test_batch}"))
