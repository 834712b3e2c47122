"""TinyImageNet-200: the official tree, val rearrangement, class order, 32x32 transfer pipeline, download."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from distillers.data import DATASETS, build_loaders, load_datasets, prepare_tiny_imagenet_val, tiny_imagenet
from distillers.data import download as download_module
from distillers.data.transforms import TINY_IMAGENET_MEAN, TINY_IMAGENET_STD, denormalize
from distillers.errors import UserError

from .fake_data import decode_rgb, write_tiny_imagenet


def test_val_rearrangement_moves_by_annotation_and_is_idempotent(tmp_path):
    written = write_tiny_imagenet(tmp_path, n_classes=3, n_val_per_class=2)
    folder = written.folder
    assert prepare_tiny_imagenet_val(folder) == 6
    assert not (folder / "val" / "images").exists()
    for name, label in zip(written.val_names, written.val_labels):
        assert (folder / "val" / sorted(written.wnids)[label] / name).is_file()
    assert (folder / "val" / "val_annotations.txt").is_file()
    assert prepare_tiny_imagenet_val(folder) == 0  # rerun: nothing to move, nothing broken


def test_half_done_rearrangement_finishes(tmp_path):
    written = write_tiny_imagenet(tmp_path, n_classes=2, n_val_per_class=3)
    folder = written.folder
    first, wnid = written.val_names[0], sorted(written.wnids)[written.val_labels[0]]
    (folder / "val" / wnid).mkdir()
    (folder / "val" / "images" / first).rename(folder / "val" / wnid / first)  # as if interrupted
    assert prepare_tiny_imagenet_val(folder) == 5
    assert len(list((folder / "val").glob("n*/*.JPEG"))) == 6


def test_missing_val_image_is_a_user_error(tmp_path):
    written = write_tiny_imagenet(tmp_path, n_classes=2)
    missing = written.folder / "val" / "images" / written.val_names[1]
    missing.unlink()
    with pytest.raises(UserError, match=written.val_names[1]):
        prepare_tiny_imagenet_val(written.folder)


def _labels_by_name(dataset) -> dict[str, int]:
    return {path.rsplit("/", 1)[-1]: int(label) for path, label in zip(dataset.base.paths, dataset.labels)}


def test_loads_both_layouts_with_sorted_class_order(tmp_path):
    written = write_tiny_imagenet(tmp_path, n_classes=4, n_train_per_class=3, n_val_per_class=2, seed=1)
    assert written.wnids != sorted(written.wnids)  # so the test can tell wnids.txt order from sorted order
    train_before, val_before, info = load_datasets("tinyimagenet", tmp_path)
    assert (info.num_train, info.num_test, info.num_classes, info.input_size) == (12, 8, 200, 32)
    expected_train = {p.name: int(label) for p, label in zip(written.train_paths, written.train_labels)}
    assert _labels_by_name(train_before) == expected_train
    expected_val = dict(zip(written.val_names, written.val_labels.tolist()))
    assert _labels_by_name(val_before) == expected_val
    assert (tmp_path / "tiny-imagenet-200" / "val" / "images").is_dir()  # loading never moves files
    prepare_tiny_imagenet_val(written.folder)
    _, val_after, _ = load_datasets("tinyimagenet", tmp_path)
    assert _labels_by_name(val_after) == expected_val
    assert list(val_after.labels) == sorted(val_after.labels)  # ImageFolder's order: by class


def test_val_folders_without_annotations(tmp_path):
    written = write_tiny_imagenet(tmp_path, n_classes=3, n_val_per_class=2)
    prepare_tiny_imagenet_val(written.folder)
    (written.folder / "val" / "val_annotations.txt").unlink()
    _, val, _ = load_datasets("tinyimagenet", tmp_path)
    assert _labels_by_name(val) == dict(zip(written.val_names, written.val_labels.tolist()))


def test_images_are_decoded_to_rgb_and_resized_to_32(tmp_path):
    written = write_tiny_imagenet(tmp_path, n_classes=2, n_train_per_class=2, n_val_per_class=3)
    spec = DATASETS.get("tinyimagenet")
    assert (spec.mean, spec.std) == (TINY_IMAGENET_MEAN, TINY_IMAGENET_STD)
    _, test_loader, _ = build_loaders("tinyimagenet", tmp_path, batch_size=4, workers=0)
    images = torch.cat([b["image"] for b in test_loader])
    assert images.shape == (6, 3, 32, 32)
    restored = (denormalize(images, TINY_IMAGENET_MEAN, TINY_IMAGENET_STD).permute(0, 2, 3, 1) * 255).round()
    val = load_datasets("tinyimagenet", tmp_path)[1].base
    expected = np.stack([np.asarray(Image.fromarray(decode_rgb(p)).resize((32, 32), Image.BILINEAR))
                         for p in val.paths])
    np.testing.assert_array_equal(restored.to(torch.uint8).numpy(), expected)
    grey = load_datasets("tinyimagenet", tmp_path)[0].base  # the first train image is a greyscale JPEG
    first = grey.paths.index(str(written.train_paths[0]))
    assert Image.open(written.train_paths[0]).mode == "L" and grey.image(first).mode == "RGB"
    train_loader, _, _ = build_loaders("tinyimagenet", tmp_path, batch_size=4, workers=0, sample="index")
    batch = next(iter(train_loader))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["index"].dtype == torch.int64


def test_corrupt_image_names_the_file(tmp_path):
    written = write_tiny_imagenet(tmp_path, n_classes=2, n_train_per_class=1)
    bad = written.train_paths[1]
    bad.write_bytes(b"not a jpeg")
    train, _, _ = load_datasets("tinyimagenet", tmp_path)
    with pytest.raises(UserError, match="corrupt") as error:
        train[train.base.paths.index(str(bad))]
    assert str(bad) in str(error.value)


def test_missing_dataset_and_consented_download_rearranges_val(tmp_path, monkeypatch):
    calls = []

    def fake_download(url, root, md5):
        calls.append((url, root, md5))
        write_tiny_imagenet(root, n_classes=2)

    monkeypatch.setattr(download_module, "download_and_extract_archive", fake_download)
    with pytest.raises(UserError) as error:
        load_datasets("tinyimagenet", tmp_path)
    message = str(error.value)
    assert "\n" not in message and str(tmp_path / "tiny-imagenet-200") in message and "--download" in message
    assert tiny_imagenet.URL in message and calls == []
    load_datasets("tiny-imagenet", tmp_path, download=True)
    assert calls == [("http://cs231n.stanford.edu/tiny-imagenet-200.zip", str(tmp_path),
                      "90528d7ca1a48142e341f4ef8d21d0de")]
    assert not (tmp_path / "tiny-imagenet-200" / "val" / "images").exists()  # as get_tinyimagenet.sh leaves it
