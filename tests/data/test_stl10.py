"""STL-10: our reader of the official binary files, the seed's 32x32 transfer pipeline, errors, download."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from distillers.data import DATASETS, build_loaders, load_datasets, stl10
from distillers.data import download as download_module
from distillers.data.transforms import STL10_MEAN, STL10_STD, denormalize
from distillers.errors import UserError

from .fake_data import write_stl10


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    return write_stl10(tmp_path_factory.mktemp("stl"), n_train=20, n_test=13, seed=2)


def test_native_images_and_labels_round_trip(written):
    for train, split in ((True, written.train), (False, written.test)):
        images, labels = stl10.read_stl10_split(written.root, train)
        assert images.shape == (len(split.labels), 96, 96, 3)
        np.testing.assert_array_equal(images, split.images)
        np.testing.assert_array_equal(labels, split.labels)  # files hold 1..10, we return 0..9


def test_reader_matches_torchvision_layout(written):
    # torchvision's STL10 reads the same bytes as (N, C, W, H) and transposes to CHW; check we agree pixel by pixel
    raw = np.fromfile(written.files["train_X.bin"], dtype=np.uint8).reshape(-1, 3, 96, 96).transpose(0, 1, 3, 2)
    images, _ = stl10.read_stl10_split(written.root, True)
    np.testing.assert_array_equal(images.transpose(0, 3, 1, 2), raw)


def test_transfer_pipeline_resizes_to_32_like_the_seed(written):
    spec = DATASETS.get("stl10")
    assert (spec.num_classes, spec.input_size, spec.mean, spec.std) == (10, 32, STL10_MEAN, STL10_STD)
    _, test_loader, info = build_loaders("stl10", written.root, batch_size=8, workers=0)
    assert (info.num_train, info.num_test, info.input_size) == (20, 13, 32)
    batches = list(test_loader)
    images = torch.cat([b["image"] for b in batches])
    assert images.shape == (13, 3, 32, 32)
    restored = (denormalize(images, STL10_MEAN, STL10_STD).permute(0, 2, 3, 1) * 255).round().to(torch.uint8)
    # the seed's transforms.Resize((32, 32)) on the PIL image (bilinear)
    expected = np.stack([np.asarray(Image.fromarray(a).resize((32, 32), Image.BILINEAR)) for a in written.test.images])
    np.testing.assert_array_equal(restored.numpy(), expected)
    np.testing.assert_array_equal(torch.cat([b["target"] for b in batches]).numpy(), written.test.labels)


def test_index_variant_returns_the_sample_index(written):
    train_loader, _, _ = build_loaders("stl10", written.root, batch_size=6, workers=0, sample="index", seed=5)
    indices, targets = [], []
    for batch in train_loader:
        assert batch["image"].shape[1:] == (3, 32, 32)
        indices.append(batch["index"])
        targets.append(batch["target"])
    indices = torch.cat(indices)
    assert indices.dtype == torch.int64 and sorted(indices.tolist()) == list(range(20))
    np.testing.assert_array_equal(torch.cat(targets).numpy(), written.train.labels[indices.numpy()])


def test_truncated_images_file_names_the_file(tmp_path):
    files = write_stl10(tmp_path, n_train=10, n_test=10).files
    path = files["test_X.bin"]
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(UserError, match="truncated") as error:
        load_datasets("stl10", tmp_path)
    assert str(path) in str(error.value)


def test_label_count_mismatch_and_bad_labels(tmp_path):
    files = write_stl10(tmp_path, n_train=10, n_test=10).files
    files["train_y.bin"].write_bytes(bytes([1] * 9))
    with pytest.raises(UserError, match="9 labels for 10 images"):
        load_datasets("stl10", tmp_path)
    files["train_y.bin"].write_bytes(bytes([0] * 10))
    with pytest.raises(UserError, match="outside 1..10"):
        load_datasets("stl10", tmp_path)


def test_missing_files_and_consented_download(tmp_path, monkeypatch):
    calls = []

    def fake_download(url, root, md5):
        calls.append((url, root, md5))
        write_stl10(root, n_train=10, n_test=10)

    monkeypatch.setattr(download_module, "download_and_extract_archive", fake_download)
    with pytest.raises(UserError) as error:
        load_datasets("stl10", tmp_path)
    assert "\n" not in str(error.value) and "stl10_binary" in str(error.value) and stl10.URL in str(error.value)
    assert calls == []
    _, test_set, _ = load_datasets("stl10", tmp_path, download=True)
    assert calls == [("http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz", str(tmp_path),
                      "91f7769df0f17e558f3565bffb0c7dfb")]
    assert len(test_set) == 10
