"""Verified downloads through torchvision's helper (md5 checked before extraction); failures become UserErrors."""

from __future__ import annotations

import tarfile
import zipfile
from pathlib import Path

from torchvision.datasets import utils as tv_utils

from distillers.data.base import one_line
from distillers.errors import UserError


def download_and_extract_archive(url: str, download_root: str, md5: str) -> None:
    """torchvision's downloader, looked up at call time (tests replace this function to stay offline)."""
    tv_utils.download_and_extract_archive(url, download_root, md5=md5)


def fetch_archive(url: str, md5: str, data_dir: Path, title: str) -> None:
    """Download ``url`` into ``data_dir``, check its md5 and extract it there; explain any failure in one line."""
    # URLError is an OSError, a wrong md5 a RuntimeError, a broken archive a TarError or BadZipFile.
    try:
        Path(data_dir).mkdir(parents=True, exist_ok=True)
        download_and_extract_archive(url, str(data_dir), md5)
    except (OSError, RuntimeError, ValueError, tarfile.TarError, zipfile.BadZipFile) as error:
        raise UserError(f"could not download {title} from {url} into {data_dir} ({one_line(error)}); check the "
                        f"network, or download the archive yourself and extract it into {data_dir}") from error
