"""Datasets and loaders: a registry of dataset specs (one file per dataset), CRD sampling, seeded loaders.

``build_loaders("cifar100", "./data", batch_size=64, workers=2, sample="contrast", nce_k=16384)`` returns
``(train_loader, test_loader, info)``; every batch is a dict (see ``distillers.data.loaders``). Adding a dataset
is one new module here that registers a ``DatasetSpec`` in ``DATASETS``.
"""

from __future__ import annotations

from distillers.data.base import DATASETS, ArrayImages, DatasetSpec, FileImages, LabelledImages
from distillers.data.loaders import SAMPLES, DataInfo, build_loaders, get_dataset, load_datasets
from distillers.data.sampling import ContrastSampler, SampledDataset
from distillers.registry import import_submodules

import_submodules(__name__, __path__)  # registers every dataset module, in file-name order

from distillers.data.tiny_imagenet import prepare_tiny_imagenet_val  # noqa: E402

__all__ = ["DATASETS", "SAMPLES", "ArrayImages", "ContrastSampler", "DataInfo", "DatasetSpec", "FileImages",
           "LabelledImages", "SampledDataset", "build_loaders", "get_dataset", "load_datasets",
           "prepare_tiny_imagenet_val"]
