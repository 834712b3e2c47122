"""CIFAR-100 / CIFAR-10: the real readers on tiny files in the official pickle format."""

from __future__ import annotations

import pickle
from urllib.error import URLError

import numpy as np
import pytest
import torch

from distillers.data import DATASETS, build_loaders, load_datasets
from distillers.data import download as download_module
from distillers.data.cifar import CIFAR10, CIFAR100
from distillers.data.transforms import CIFAR100_MEAN, CIFAR100_STD, denormalize
from distillers.errors import UserError

from .fake_data import write_cifar10, write_cifar100


@pytest.fixture(scope="module")
def cifar100(tmp_path_factory):
    return write_cifar100(tmp_path_factory.mktemp("c100"), n_train=200, n_test=60, seed=3)


@pytest.fixture(scope="module")
def cifar10(tmp_path_factory):
    return write_cifar10(tmp_path_factory.mktemp("c10"), n_train=43, n_test=17, seed=4)


@pytest.mark.parametrize("name, fixture", [("cifar100", "cifar100"), ("cifar10", "cifar10")])
def test_raw_pixels_and_labels_round_trip(name, fixture, request):
    written = request.getfixturevalue(fixture)
    spec = DATASETS.get(name)
    for train, split in ((True, written.train), (False, written.test)):
        images = spec.load(written.root, train)
        np.testing.assert_array_equal(images.images, split.images)
        np.testing.assert_array_equal(images.labels, split.labels)
        assert images.labels.dtype == np.int64


def test_cifar100_reads_fine_labels_not_coarse(cifar100):
    # coarse labels (fine // 5) differ from fine ones for most samples: the reader must pick the fine ones
    assert (cifar100.train.labels // 5 != cifar100.train.labels).any()
    images = DATASETS.get("cifar100").load(cifar100.root, True)
    assert images.labels.max() > 19 and np.array_equal(images.labels, cifar100.train.labels)


def test_test_batches_are_unaugmented_and_normalised_with_seed_constants(cifar100):
    _, test_loader, info = build_loaders("cifar100", cifar100.root, batch_size=16, workers=0, seed=0)
    assert (info.mean, info.std) == (CIFAR100_MEAN, CIFAR100_STD)
    images, targets = [], []
    for batch in test_loader:
        assert set(batch) == {"image", "target"}
        images.append(batch["image"])
        targets.append(batch["target"])
    pixels = denormalize(torch.cat(images), CIFAR100_MEAN, CIFAR100_STD)  # (N, 3, 32, 32) in [0, 1]
    restored = (pixels.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    np.testing.assert_array_equal(restored, cifar100.test.images)
    np.testing.assert_array_equal(torch.cat(targets).numpy(), cifar100.test.labels)


def test_train_images_are_augmented_crops_of_the_written_image(cifar100):
    train_set, _, _ = load_datasets("cifar100", cifar100.root)
    torch.manual_seed(0)
    seen_shifted = False
    for index in range(12):
        image = train_set[index]["image"]
        assert image.shape == (3, 32, 32) and image.dtype == torch.float32
        pixels = (denormalize(image, CIFAR100_MEAN, CIFAR100_STD).permute(1, 2, 0) * 255).round().to(torch.uint8)
        padded = np.pad(cifar100.train.images[index], ((4, 4), (4, 4), (0, 0)))
        windows = [padded[y:y + 32, x:x + 32] for y in range(9) for x in range(9)]
        windows += [w[:, ::-1] for w in windows]
        match = [i for i, w in enumerate(windows) if np.array_equal(w, pixels.numpy())]
        assert match, "a train image must be a (flipped) 32x32 window of the zero-padded original"
        seen_shifted |= match[0] not in (4 * 9 + 4, 81 + 4 * 9 + 4)
    assert seen_shifted


def test_cifar10_concatenates_the_five_batches_in_order(cifar10):
    train = DATASETS.get("cifar10").load(cifar10.root, True)
    assert len(train) == 43
    np.testing.assert_array_equal(train.images, cifar10.train.images)


def test_missing_dataset_says_where_and_how_without_downloading(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(download_module, "download_and_extract_archive", lambda *a, **k: calls.append(a))
    with pytest.raises(UserError) as error:
        build_loaders("cifar100", tmp_path / "nowhere", workers=0)
    message = str(error.value)
    assert "\n" not in message
    assert str(tmp_path / "nowhere" / "cifar-100-python") in message
    assert "--download" in message and CIFAR100.url in message
    assert calls == []


@pytest.mark.parametrize("name, fmt, writer", [("cifar100", CIFAR100, write_cifar100),
                                               ("cifar10", CIFAR10, write_cifar10)])
def test_download_uses_official_url_and_md5_then_loads(name, fmt, writer, tmp_path, monkeypatch):
    calls = []

    def fake_download(url, root, md5):  # what torchvision would do after a verified download
        calls.append((url, root, md5))
        writer(root, seed=1)

    monkeypatch.setattr(download_module, "download_and_extract_archive", fake_download)
    _, _, info = build_loaders(name, tmp_path, workers=0, download=True)
    assert calls == [(fmt.url, str(tmp_path), fmt.md5)]
    assert info.num_train == len(writer(tmp_path / "again", seed=1).train.labels)
    build_loaders(name, tmp_path, workers=0, download=True)  # files present: no second download
    assert len(calls) == 1


def test_official_constants():
    assert CIFAR100.url == "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
    assert CIFAR100.md5 == "eb9058c3a382ffc7106e4002c42a8d85"
    assert CIFAR10.url == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert CIFAR10.md5 == "c58f30108f718f92721af3b95e74349a"


def test_failed_download_is_one_line_user_error(tmp_path, monkeypatch):
    def offline(url, root, md5):
        raise URLError("[Errno -3] Temporary failure\nin name resolution")

    monkeypatch.setattr(download_module, "download_and_extract_archive", offline)
    with pytest.raises(UserError) as error:
        load_datasets("cifar100", tmp_path, download=True)
    message = str(error.value)
    assert "\n" not in message and CIFAR100.url in message and "Temporary failure in name resolution" in message


def test_truncated_pickle_names_the_file(tmp_path):
    written = write_cifar100(tmp_path, n_train=100, n_test=100)
    path = written.files["train"]
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(UserError, match="not a readable CIFAR batch") as error:
        load_datasets("cifar100", tmp_path)
    assert str(path) in str(error.value)


def test_wrong_shape_and_bad_labels_name_the_file(tmp_path):
    written = write_cifar100(tmp_path, n_train=100, n_test=100)
    with open(written.files["test"], "wb") as handle:
        pickle.dump({"data": np.zeros((4, 100), np.uint8), "fine_labels": [0] * 4}, handle, protocol=2)
    with pytest.raises(UserError, match="N x 3072") as error:
        load_datasets("cifar100", tmp_path)
    assert str(written.files["test"]) in str(error.value)
    with open(written.files["test"], "wb") as handle:
        pickle.dump({"data": np.zeros((2, 3072), np.uint8), "fine_labels": [3, 100]}, handle, protocol=2)
    with pytest.raises(UserError, match="outside 0..99"):
        load_datasets("cifar100", tmp_path)


class _Sneaky:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickle_with_foreign_objects_is_refused_not_executed(tmp_path, capsys):
    written = write_cifar100(tmp_path, n_train=100, n_test=100)
    with open(written.files["train"], "wb") as handle:
        pickle.dump({"data": _Sneaky(), "fine_labels": []}, handle, protocol=2)
    with pytest.raises(UserError, match=r"unexpected object \w+\.print") as error:
        load_datasets("cifar100", tmp_path)
    assert str(written.files["train"]) in str(error.value)
    assert "never run" not in capsys.readouterr().out


def test_python2_style_pickle_reads(tmp_path):
    """The official files are Python 2 pickles: str keys/values arrive as bytes-decoded latin1 strings."""
    written = write_cifar100(tmp_path, n_train=100, n_test=100, seed=5)
    data = written.train.images.transpose(0, 3, 1, 2).reshape(100, 3072)
    # Protocol 0 with numpy's legacy module path, as an old numpy writes it.
    payload = pickle.dumps({"data": data, "fine_labels": written.train.labels.tolist()}, protocol=0)
    payload = payload.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    written.files["train"].write_bytes(payload)
    images = DATASETS.get("cifar100").load(tmp_path, True)
    np.testing.assert_array_equal(images.images, written.train.images)
