"""ImageNet: a tiny ImageFolder tree through the real reader, the 224x224 pipelines, and layout errors."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distillers.data import DATASETS, build_loaders, load_datasets
from distillers.data.imagenet import MEAN, STD
from distillers.data.transforms import denormalize
from distillers.errors import UserError

WNIDS = ["n01440764", "n01443537", "n01484850"]  # the first three ILSVRC-2012 wnids, in sorted order


@dataclass
class FakeImageNet:
    root: Path  # data_dir
    train: dict[Path, int]  # written file -> label (index in sorted wnids)
    val: dict[Path, int]


def write_imagenet(root: Path, wnids: list[str] = WNIDS, n_train: int = 3, n_val: int = 2,
                   seed: int = 0) -> FakeImageNet:
    """``root/imagenet/{train,val}/<wnid>/*.JPEG`` of random 64x64 images; the first train image of each class is
    stored greyscale and the second CMYK, as a few real ImageNet JPEGs are."""
    rng = np.random.default_rng(seed)
    written: dict[str, dict[Path, int]] = {"train": {}, "val": {}}
    for split, count in (("train", n_train), ("val", n_val)):
        for label, wnid in enumerate(sorted(wnids)):
            folder = root / "imagenet" / split / wnid
            folder.mkdir(parents=True)
            for j in range(count):
                image = Image.fromarray(rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8))
                mode = {0: "L", 1: "CMYK"}.get(j, "RGB") if split == "train" else "RGB"
                path = folder / f"{wnid}_{split}_{j}.JPEG"
                image.convert(mode).save(path, format="JPEG", quality=95)
                written[split][path] = label
    return FakeImageNet(root, written["train"], written["val"])


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory) -> FakeImageNet:
    return write_imagenet(tmp_path_factory.mktemp("in"))


def test_spec_facts():
    spec = DATASETS.get("imagenet")
    assert DATASETS.get("ilsvrc2012") is spec
    assert (spec.num_classes, spec.input_size, spec.download) == (1000, 224, None)
    assert (spec.mean, spec.std) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    train = spec.train_transform().transforms
    assert [type(s).__name__ for s in train] == ["RandomResizedCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]
    assert train[0].size == (224, 224) and train[0].scale == (0.08, 1.0)
    test = spec.test_transform().transforms
    assert [type(s).__name__ for s in test] == ["Resize", "CenterCrop", "ToTensor", "Normalize"]
    assert test[0].size == 256 and test[1].size == (224, 224)  # an int: the shorter side goes to 256


def test_loads_items_with_imagefolder_labels(imagenet):
    train, val, info = load_datasets("imagenet", imagenet.root)
    assert (info.name, info.num_classes, info.num_train, info.num_test, info.input_size) == \
        ("imagenet", len(WNIDS), 9, 6, 224)  # the class count comes from the class folders (subsets work)
    assert train.base.classes == val.base.classes == WNIDS
    assert {Path(p): int(y) for p, y in zip(train.base.paths, train.labels)} == imagenet.train
    assert {Path(p): int(y) for p, y in zip(val.base.paths, val.labels)} == imagenet.val
    for dataset in (train, val):
        item = dataset[len(dataset) - 1]
        assert set(item) == {"image", "target"}
        assert item["image"].shape == (3, 224, 224) and item["image"].dtype == torch.float32
        assert item["target"] == 2


def test_greyscale_and_cmyk_jpegs_become_rgb(imagenet):
    train, _, _ = load_datasets("imagenet", imagenet.root)
    modes = {}
    for index, path in enumerate(train.base.paths):
        with Image.open(path) as handle:
            modes[handle.mode] = index
    assert set(modes) == {"L", "CMYK", "RGB"}
    for index in modes.values():
        assert train.base.image(index).mode == "RGB"
        assert train[index]["image"].shape == (3, 224, 224)


def test_val_pipeline_is_resize_256_then_centre_crop_224(imagenet):
    _, val, _ = load_datasets("imagenet", imagenet.root)
    images = torch.stack([val[i]["image"] for i in range(len(val))])
    restored = (denormalize(images, MEAN, STD).permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()
    expected = []
    for path in val.base.paths:
        with Image.open(path) as handle:  # 64x64 -> 256x256 bilinear, then the central 224x224
            expected.append(np.asarray(handle.convert("RGB").resize((256, 256), Image.BILINEAR))[16:240, 16:240])
    np.testing.assert_array_equal(restored, np.stack(expected))


def test_train_pipeline_crops_randomly(imagenet):
    train, _, _ = load_datasets("imagenet", imagenet.root)
    torch.manual_seed(0)
    first = train[4]["image"]
    torch.manual_seed(1)
    second = train[4]["image"]
    torch.manual_seed(0)
    again = train[4]["image"]
    assert first.shape == second.shape == (3, 224, 224)
    assert torch.equal(first, again) and not torch.equal(first, second)


def test_loader_batches(imagenet):
    train_loader, test_loader, _ = build_loaders("imagenet", imagenet.root, batch_size=4, workers=0, sample="index")
    batch = next(iter(train_loader))
    assert batch["image"].shape == (4, 3, 224, 224) and batch["index"].dtype == torch.int64
    assert torch.equal(batch["target"], torch.from_numpy(train_loader.dataset.labels)[batch["index"]])
    assert torch.cat([b["target"] for b in test_loader]).tolist() == [0, 0, 1, 1, 2, 2]


def test_missing_dataset_says_to_download_it_from_image_net(tmp_path):
    for download in (False, True):
        with pytest.raises(UserError) as error:
            load_datasets("imagenet", tmp_path, download=download)
        message = str(error.value)
        assert "\n" not in message and str(tmp_path / "imagenet") in message
        assert "image-net.org" in message and "licence" in message and "val/<wnid>/" in message
        assert ("--download cannot fetch it" in message) == download
    write_imagenet(tmp_path, n_train=1, n_val=1)
    with pytest.raises(UserError, match=f"contains imagenet: try {tmp_path}"):
        load_datasets("imagenet", tmp_path / "imagenet")


def test_flat_val_folder_is_explained(tmp_path):
    written = write_imagenet(tmp_path, n_train=1, n_val=1)
    for path in written.val:
        path.rename(tmp_path / "imagenet" / "val" / path.name)
        path.parent.rmdir()
    with pytest.raises(UserError, match=r"holds 3 images outside class folders .*val/<wnid>/.*valprep\.sh"):
        load_datasets("imagenet", tmp_path)


def test_layout_errors_name_the_problem(tmp_path):
    written = write_imagenet(tmp_path / "unknown", n_train=1, n_val=1)
    (written.root / "imagenet" / "val" / "n99999999").mkdir()
    with pytest.raises(UserError, match="class folders that .* lacks \\(n99999999\\)"):
        load_datasets("imagenet", written.root)

    written = write_imagenet(tmp_path / "empty", n_train=1, n_val=1)
    (written.root / "imagenet" / "train" / "n00000001").mkdir()
    with pytest.raises(UserError, match="1 class folders of .* hold no images \\(n00000001\\)"):
        load_datasets("imagenet", written.root)

    tars = tmp_path / "tars" / "imagenet"
    (tars / "val").mkdir(parents=True)
    (tars / "train").mkdir()
    (tars / "train" / "n01440764.tar").write_bytes(b"")
    with pytest.raises(UserError, match="holds 1 .tar archives: extract each into train/<wnid>/"):
        load_datasets("imagenet", tars.parent)

    too_many = tmp_path / "many" / "imagenet"
    for i in range(1001):
        (too_many / "train" / f"n{i:08d}").mkdir(parents=True)
    (too_many / "val").mkdir()
    with pytest.raises(UserError, match="has 1001 class folders, ImageNet has 1000"):
        load_datasets("imagenet", too_many.parent)


def test_imagenet_track_end_to_end_through_the_cli(tmp_path, capsys):
    """A torchvision-format ResNet18 teacher (a bare state dict) distils a MobileNetV1 student with CRD on a tiny
    ImageFolder at 224x224, through the same `distill` command and engine as CIFAR."""
    from distillers import cli
    from distillers.models import create_model

    data = write_imagenet(tmp_path / "data", n_train=4, n_val=2)
    torch.manual_seed(0)
    teacher = tmp_path / "resnet18-torchvision.pth"
    torch.save(create_model("resnet18_imagenet", num_classes=len(WNIDS)).state_dict(), teacher)
    out = tmp_path / "runs"
    code = cli.main(["distill", "--teacher", str(teacher), "--teacher-arch", "resnet18_imagenet", "--student",
                     "mobilenet_v1_imagenet", "--method", "crd", "--nce-k", "4", "--feat-dim", "8", "--dataset",
                     "imagenet", "--data-dir", str(data.root), "--out", str(out), "--epochs", "1", "--batch-size",
                     "4", "--max-steps-per-epoch", "2", "--workers", "0", "--device", "cpu"])
    assert code == 0, capsys.readouterr().err
    run = next(out.iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs_done"] == 1
    assert 0 <= summary["last_acc"] <= 100 and summary["teacher_acc"] is not None
    assert (run / "last.pt").is_file()
