"""Download RepDistiller's pretrained CIFAR-100 teachers into ``save/models/<name>_vanilla/ckpt_epoch_240.pth``.

The seed's host (shape2prog.csail.mit.edu) has been down for years, so sources are tried in order: the seed's
URLs, then the same CRD teachers re-published as mdistiller's ``cifar_teachers.tar`` release asset. A user's
mirror (``url``) or local file (``file``) replaces that list. Downloads resume (HTTP Range), land atomically,
get a SHA-256 recorded next to them, and every checkpoint is treated as untrusted (``weights_only=True``).
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import shutil
import tarfile
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.error import HTTPError, URLError

import torch
from tqdm import tqdm

from distillers import __version__
from distillers.engine.checkpoint import describe_load_failure
from distillers.errors import UserError
from distillers.models import MODELS

logger = logging.getLogger(__name__)

# The teachers of RepDistiller's scripts/fetch_pretrained_teachers.sh, in its order.
DEFAULT_TEACHERS = ("wrn_40_2", "resnet56", "resnet110", "resnet32x4", "vgg13", "ResNet50")
SEED_URL = "http://shape2prog.csail.mit.edu/repo/{name}_vanilla/ckpt_epoch_240.pth"
MDISTILLER_URL = "https://github.com/megvii-research/mdistiller/releases/download/checkpoints/cifar_teachers.tar"
# A location containing "{name}" holds one checkpoint per teacher; otherwise it is one file (a tar or a .pth).
DEFAULT_SOURCES = (SEED_URL, MDISTILLER_URL)

CHECKPOINT_NAME = "ckpt_epoch_240.pth"
DOWNLOADS_DIR = ".downloads"  # under save_dir: same filesystem as the targets, so the final rename is atomic
CHUNK_BYTES = 1 << 16
MAX_DOWNLOAD_BYTES = 8 << 30  # bounds a server that streams without a Content-Length
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_MEMBER = re.compile(r"(?:^|/)([A-Za-z0-9][A-Za-z0-9_.-]*)_vanilla/" + re.escape(CHECKPOINT_NAME) + "$")
_HINT = ("pass --url URL (a mirror: a .pth for one teacher, a '{name}' URL template, or a .tar laid out like "
         "mdistiller's cifar_teachers.tar) or --file PATH (a local .pth or .tar)")


class FetchError(Exception):
    """A source could not provide a file (HTTP error, no answer, bad content); the next source is tried."""


class _Unreachable(FetchError):
    """No response from the host at all: every other teacher of the same source would fail the same way."""


class _Interrupted(Exception):
    """The transfer stopped part-way; the partial file is kept and resumed."""


def checkpoint_path(save_dir: str | Path, name: str) -> Path:
    """Where RepDistiller's commands expect a teacher (``--path_t save/models/<name>_vanilla/ckpt_epoch_240.pth``)."""
    return Path(save_dir) / f"{name}_vanilla" / CHECKPOINT_NAME


def load_teacher_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load an untrusted RepDistiller checkpoint safely and check it is a dict holding a ``model`` state dict."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError, RuntimeError (not a zip), EOFError...: all mean "not loadable"
        raise UserError(f"{describe_load_failure(Path(path), error)}; a teacher must be a RepDistiller checkpoint "
                        "saved with torch.save") from error
    model = payload.get("model") if isinstance(payload, dict) else None
    if not isinstance(model, dict) or not model or not all(
            isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in model.items()):
        found = sorted(map(str, payload))[:8] if isinstance(payload, dict) else type(payload).__name__
        raise UserError(f"{path} is not a RepDistiller checkpoint (found {found}); expected a dict whose 'model' "
                        "entry is a state dict of tensors")
    return payload


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path, *, progress: bool = True, timeout: float = 30.0, attempts: int = 3,
             desc: str | None = None) -> Path:
    """Download ``url`` to ``dest`` through ``<dest>.part``, resuming a partial file with an HTTP Range request.

    A transfer cut short is resumed up to ``attempts`` times in this call; what arrived stays in the ``.part``
    file for the next call. Raises ``FetchError`` (HTTP error, unreachable host, transfer kept stopping).
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    last = "no attempt made"
    for _ in range(attempts):
        try:
            _transfer(url, part, progress=progress, timeout=timeout, desc=desc or dest.name)
        except _Interrupted as error:
            last = str(error)
            continue
        os.replace(part, dest)
        return dest
    kept = part.stat().st_size if part.exists() else 0
    raise FetchError(f"{last}; {attempts} attempts, {kept} bytes kept in {part}: run again to resume")


def _transfer(url: str, part: Path, *, progress: bool, timeout: float, desc: str) -> None:
    """One HTTP request: append to ``part`` on 206 (Range honoured), rewrite it on 200 (Range ignored)."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": f"distillers/{__version__}"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except HTTPError as error:
        error.close()
        if error.code == 416 and offset:
            # Our partial file is not a prefix of what the server has now (or is already whole): start over.
            part.unlink()
            raise _Interrupted(f"{url}: server refused to resume (HTTP 416), restarting") from error
        raise FetchError(f"HTTP {error.code} {error.reason}") from error
    except (URLError, OSError, http.client.HTTPException) as error:
        raise _Unreachable(_one_line(getattr(error, "reason", error))) from error
    with response:
        if response.status == 206:
            start = _range_start(response.headers.get("Content-Range"))
            if start != offset:
                part.unlink()
                raise _Interrupted(f"{url}: server resumed at byte {start}, not {offset}; restarting")
        else:  # 200: the server ignored the Range header (or we sent none), so its body is the whole file
            offset = 0
        length = response.headers.get("Content-Length")
        expected = offset + int(length) if length and length.isdigit() else None
        received = offset
        with open(part, "ab" if offset else "wb") as out, tqdm(
                total=expected, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                disable=not progress, leave=False) as bar:
            try:
                while chunk := response.read(CHUNK_BYTES):
                    out.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
                    if received > MAX_DOWNLOAD_BYTES:
                        raise FetchError(f"{url} sent more than {MAX_DOWNLOAD_BYTES} bytes; refusing it")
            except (OSError, http.client.HTTPException) as error:  # reset, read timeout, IncompleteRead
                raise _Interrupted(f"transfer stopped after {received} bytes ({_one_line(error)})") from error
            finally:
                out.flush()
                os.fsync(out.fileno())
    # http.client returns a short body silently when the peer closes early, so the length is checked here.
    if expected is not None and received < expected:
        raise _Interrupted(f"transfer stopped after {received} of {expected} bytes")


def _range_start(content_range: str | None) -> int | None:
    match = re.match(r"bytes (\d+)-", content_range or "")
    return int(match.group(1)) if match else None


def fetch_teachers(names: Iterable[str] | None = None, save_dir: str | Path = "save/models",
                   sources: Sequence[str] | None = None, url: str | None = None, file: str | Path | None = None,
                   progress: bool = True, verify: Callable[[str, Path], Any] | None = None,
                   timeout: float = 30.0) -> list[Path]:
    """Make each teacher's RepDistiller checkpoint present, verified and loadable; return their paths in order.

    ``names`` defaults to the seed's six teachers. ``sources`` are tried in order (default: the seed's URLs, then
    mdistiller's tar); ``url`` or ``file`` replaces them, since a user who names a mirror means that mirror.
    A teacher already on disk is checked against its recorded SHA-256 instead of fetched. ``verify(name, path)``
    runs after each teacher is in place (the lead uses it to measure test accuracy).
    """
    teachers = _check_names(DEFAULT_TEACHERS if names is None else names)
    save_dir = Path(save_dir)
    blocked = next((p for p in (save_dir, *save_dir.parents) if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise UserError(f"--save-dir {save_dir} cannot be created: {blocked} is a file; choose another --save-dir")
    locations = _choose_sources(sources, url, file)
    paths: dict[str, Path] = {}
    pending: list[str] = []
    for name in teachers:
        dest = checkpoint_path(save_dir, name)
        if dest.exists():
            _check_existing(dest)
            paths[name] = dest
            if verify is not None:
                verify(name, dest)
        else:
            pending.append(name)

    failures: list[tuple[str, str, str]] = []  # (location, teacher, reason)
    for location in locations:
        if not pending:
            break
        for name, outcome in _fetch_from(location, pending, save_dir, progress, timeout).items():
            if isinstance(outcome, Path):
                logger.info("fetched teacher %s from %s", name, location)
                paths[name] = outcome
                if verify is not None:
                    verify(name, outcome)
            else:
                failures.append((location, name, outcome))
        pending = [name for name in pending if name not in paths]
    if (save_dir / DOWNLOADS_DIR).is_dir() and not any((save_dir / DOWNLOADS_DIR).iterdir()):
        (save_dir / DOWNLOADS_DIR).rmdir()  # partial downloads, if any, stay there to be resumed
    if pending:
        raise UserError(f"could not fetch teacher(s) {', '.join(pending)}: tried {_describe(failures, pending)}; "
                        f"{_HINT}")
    return [paths[name] for name in teachers]


def _check_names(names: Iterable[str]) -> list[str]:
    if isinstance(names, str):
        names = [names]
    unique = list(dict.fromkeys(names))
    if not unique:
        raise UserError(f"no teacher named; choose from {', '.join(DEFAULT_TEACHERS)} (or any a source offers)")
    for name in unique:
        if not _NAME.fullmatch(name):
            raise UserError(f"invalid teacher name {name!r}; use an architecture name such as "
                            f"{', '.join(DEFAULT_TEACHERS)}")
        try:  # a checkpoint for an architecture we cannot build is of no use
            MODELS.canonical(name)
        except UserError:
            raise UserError(f"unknown teacher {name!r}: not a registered architecture; the seed's teachers are "
                            f"{', '.join(DEFAULT_TEACHERS)} (`distillers list models` shows all)") from None
    return unique


def _choose_sources(sources: Sequence[str] | None, url: str | None, file: str | Path | None) -> list[str]:
    if url and file:
        raise UserError("pass --url or --file, not both")
    if url:
        if urllib.parse.urlparse(url).scheme not in ("http", "https"):
            raise UserError(f"--url {url!r} must be an http:// or https:// URL; for a local file use --file")
        return [url]
    if file:
        return [str(file)]
    return [str(location) for location in (DEFAULT_SOURCES if sources is None else sources)]


def _fetch_from(location: str, pending: list[str], save_dir: Path, progress: bool,
                timeout: float) -> dict[str, Path | str]:
    """Try one source for every pending teacher: each maps to its installed path or the reason it failed."""
    outcomes: dict[str, Path | str] = {}
    if "{name}" in location:
        for name in pending:
            try:
                candidate, ours = _obtain(location.replace("{name}", name), save_dir, progress, timeout, name)
                outcomes[name] = _install(candidate, checkpoint_path(save_dir, name), move=ours)
            except _Unreachable as error:
                # The host did not answer: asking it for the other teachers would only wait out more timeouts.
                outcomes.update({other: str(error) for other in pending if other not in outcomes})
                break
            except (FetchError, UserError) as error:
                outcomes[name] = str(error)
        return outcomes
    try:
        candidate, ours = _obtain(location, save_dir, progress, timeout, Path(location).name)
    except FetchError as error:
        return {name: str(error) for name in pending}
    try:
        if tarfile.is_tarfile(candidate):
            try:
                return _extract_teachers(candidate, location, pending, save_dir)
            except (tarfile.TarError, OSError) as error:  # e.g. a tar cut short by a server without Content-Length
                return {name: f"unreadable tar ({_one_line(error)})" for name in pending}
        if len(pending) != 1:
            return {name: f"a single checkpoint (not a tar) serves one teacher, but {len(pending)} were asked for"
                    for name in pending}
        try:
            return {pending[0]: _install(candidate, checkpoint_path(save_dir, pending[0]), move=ours)}
        except (FetchError, UserError) as error:
            return {pending[0]: str(error)}
    finally:
        if ours:  # a downloaded tar is not kept once its teachers are out (they are hundreds of MB)
            candidate.unlink(missing_ok=True)


def _obtain(location: str, save_dir: Path, progress: bool, timeout: float, desc: str) -> tuple[Path, bool]:
    """A local file for ``location``: the path itself, or a download cached under ``save_dir/.downloads``.

    Returns the path and whether it is ours to move or delete. Cache names carry a hash of the URL so a partial
    file is only ever resumed from the URL that started it.
    """
    scheme = urllib.parse.urlparse(location).scheme
    if scheme not in ("http", "https"):
        path = Path(location)
        if not path.is_file():
            raise FetchError(f"no such file {path}")
        return path, False
    basename = re.sub(r"[^A-Za-z0-9._-]", "_", PurePosixPath(urllib.parse.urlparse(location).path).name) or "download"
    key = hashlib.sha256(location.encode()).hexdigest()[:12]
    cached = save_dir / DOWNLOADS_DIR / f"{key}-{basename}"
    if not cached.exists():  # a complete file left by an interrupted run is reused as is
        download(location, cached, progress=progress, timeout=timeout, desc=desc)
    return cached, True


def _extract_teachers(archive: Path, location: str, pending: list[str], save_dir: Path) -> dict[str, Path | str]:
    """Copy only the ``<name>_vanilla/ckpt_epoch_240.pth`` members asked for; refuse an archive with unsafe members.

    Members are streamed to paths we compute, never extracted by their own names, but an archive that tries to
    escape its folder is hostile and is refused as a whole before anything is written.
    """
    outcomes: dict[str, Path | str] = {}
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for member in members:
            if _escapes(member):
                raise UserError(f"refusing archive {location}: member {member.name!r} escapes the target folder "
                                "(absolute path, '..' or link); nothing was extracted")
        offered: dict[str, list[tarfile.TarInfo]] = {}
        for member in members:
            match = _MEMBER.search(member.name)
            if match and member.isfile():
                offered.setdefault(match.group(1), []).append(member)
        for name in pending:
            matches = offered.get(name, [])
            if len(matches) != 1:
                what = "several members" if matches else "no member"
                outcomes[name] = (f"{what} ending in {name}_vanilla/{CHECKPOINT_NAME} "
                                  f"(it offers: {', '.join(sorted(offered)) or 'none'})")
                continue
            dest = checkpoint_path(save_dir, name)
            part = dest.with_name(dest.name + ".part")
            dest.parent.mkdir(parents=True, exist_ok=True)
            source = tar.extractfile(matches[0])
            assert source is not None  # isfile() members always have data
            try:
                with source, open(part, "wb") as out:
                    shutil.copyfileobj(source, out, CHUNK_BYTES)
            except BaseException:
                part.unlink(missing_ok=True)
                raise
            try:
                outcomes[name] = _install(part, dest, move=True)
            except (FetchError, UserError) as error:
                outcomes[name] = str(error)
    return outcomes


def _escapes(member: tarfile.TarInfo) -> bool:
    path = PurePosixPath(member.name.replace("\\", "/"))
    return (path.is_absolute() or ".." in path.parts or re.match(r"[A-Za-z]:", member.name) is not None
            or not (member.isfile() or member.isdir()))  # links, devices and fifos


def _install(candidate: Path, dest: Path, *, move: bool) -> Path:
    """Check ``candidate`` (loadable, matches any recorded SHA-256), put it at ``dest`` atomically, record its hash.

    A candidate that is ours (``move``) is deleted when rejected, so a bad download is not resumed later.
    """
    try:
        digest = sha256_file(candidate)
        recorded = _recorded_sha256(dest)
        if recorded is not None and recorded != digest:
            raise FetchError(f"its sha256 {digest} differs from {recorded} recorded in {_sidecar(dest)}")
        load_teacher_checkpoint(candidate)
    except BaseException:
        if move:
            candidate.unlink(missing_ok=True)
        raise
    dest.parent.mkdir(parents=True, exist_ok=True)
    if move:
        os.replace(candidate, dest)
    else:
        part = dest.with_name(dest.name + ".part")
        shutil.copyfile(candidate, part)
        os.replace(part, dest)
    _write_atomic(_sidecar(dest), f"{digest}  {dest.name}\n")
    return dest


def _check_existing(dest: Path) -> None:
    """A teacher already on disk must match its recorded SHA-256; one without a record is checked and recorded."""
    recorded = _recorded_sha256(dest)
    if recorded is None:
        try:
            load_teacher_checkpoint(dest)
        except UserError as error:
            raise UserError(f"{error}; delete it to fetch the teacher again") from error
        _write_atomic(_sidecar(dest), f"{sha256_file(dest)}  {dest.name}\n")
        return
    digest = sha256_file(dest)
    if digest != recorded:
        raise UserError(f"{dest} has sha256 {digest} but {_sidecar(dest)} recorded {recorded} when it was fetched; "
                        "the file changed: delete both files to fetch it again")


def _sidecar(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256")


def _recorded_sha256(dest: Path) -> str | None:
    sidecar = _sidecar(dest)
    if not sidecar.exists():
        return None
    fields = sidecar.read_text().split()
    if not fields or not re.fullmatch(r"[0-9a-f]{64}", fields[0]):
        raise UserError(f"{sidecar} does not hold a sha256 digest; delete it (and {dest.name}) to fetch again")
    return fields[0]


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def _describe(failures: list[tuple[str, str, str]], pending: list[str]) -> str:
    """One line per source, its reason stated once when all teachers failed the same way."""
    parts = []
    for location in dict.fromkeys(location for location, _, _ in failures):
        reasons = {name: reason for where, name, reason in failures if where == location and name in pending}
        if not reasons:
            continue
        if len(set(reasons.values())) == 1:
            parts.append(f"{location} ({_one_line(next(iter(reasons.values())), None)})")
        else:
            listed = "; ".join(f"{name}: {_one_line(reason, None)}" for name, reason in reasons.items())
            parts.append(f"{location} ({listed})")
    return ", ".join(parts) or "no source"


def _one_line(value: object, limit: int | None = 200) -> str:
    """``value`` as one line, cut to ``limit`` characters (torch's unpickling errors run to paragraphs)."""
    text = " ".join(str(value).split())
    return text if limit is None or len(text) <= limit else text[:limit - 3] + "..."
