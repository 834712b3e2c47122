"""fetch_teachers against a real HTTP server on 127.0.0.1: sources, resume, tar safety, SHA-256, untrusted input."""

from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import tarfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from distillers import fetch
from distillers.errors import UserError
from distillers.fetch import checkpoint_path, fetch_teachers

TEMPLATE = "/repo/{name}_vanilla/ckpt_epoch_240.pth"


@pytest.fixture(autouse=True)
def local_network_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any test whose code would resolve or connect to anything but 127.0.0.1 (and ignore proxies)."""
    for variable in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(variable, raising=False)
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(sock: socket.socket, address):  # type: ignore[no-untyped-def]
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1"):
            raise AssertionError(f"test tried to connect to {address}")
        return real_connect(sock, address)

    def getaddrinfo(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host not in ("127.0.0.1", "localhost"):
            raise AssertionError(f"test tried to resolve {host}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@dataclass
class Site:
    """What the local server serves and how it misbehaves, plus the (path, Range header) of every request."""

    base: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    cuts: dict[str, list[int]] = field(default_factory=dict)  # path -> [requests left to cut, bytes sent first]
    honour_range: bool = True
    stalled: set[str] = field(default_factory=set)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str) -> str:
        return self.base + path


def _handler(site: Site) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:
            asked = self.headers.get("Range")
            site.requests.append((self.path, asked))
            if self.path in site.stalled:
                site.stop.wait(10)
                return
            body = site.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            start = 0
            if asked and site.honour_range:
                start = int(re.fullmatch(r"bytes=(\d+)-", asked).group(1))
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            payload = body[start:]
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            cut = site.cuts.get(self.path)
            if cut and cut[0] > 0:  # announce the whole length, send part of it, hang up
                cut[0] -= 1
                payload = payload[:cut[1]]
                self.close_connection = True
            self.wfile.write(payload)
            self.wfile.flush()

    return Handler


@pytest.fixture
def site() -> Site:
    state = Site()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.base = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    state.stop.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def checkpoint_bytes(seed: int) -> bytes:
    """A tiny RepDistiller-style teacher checkpoint, as torch.save writes it (~30 KB)."""
    generator = torch.Generator().manual_seed(seed)
    state = {"conv1.weight": torch.randn(16, 3, 3, 3, generator=generator),
             "fc.weight": torch.randn(100, 64, generator=generator), "fc.bias": torch.zeros(100)}
    buffer = io.BytesIO()
    torch.save({"model": state, "epoch": 240, "accuracy": torch.tensor(75.61)}, buffer)
    return buffer.getvalue()


def tar_bytes(members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buffer.getvalue()


def free_port() -> int:
    """A port nothing listens on, so connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def files_under(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()}


def fetch_quietly(*args, **kwargs) -> list[Path]:  # type: ignore[no-untyped-def]
    return fetch_teachers(*args, progress=False, timeout=5, **kwargs)


def test_default_sources_are_the_seed_urls_then_mdistillers_tar() -> None:
    assert fetch.DEFAULT_TEACHERS == ("wrn_40_2", "resnet56", "resnet110", "resnet32x4", "vgg13", "ResNet50")
    seed, mdistiller = fetch.DEFAULT_SOURCES
    assert seed.replace("{name}", "resnet32x4") == \
        "http://shape2prog.csail.mit.edu/repo/resnet32x4_vanilla/ckpt_epoch_240.pth"
    assert mdistiller == ("https://github.com/megvii-research/mdistiller/releases/download/checkpoints/"
                          "cifar_teachers.tar")


def test_per_teacher_urls_install_checkpoints_record_sha256_and_call_verify(site: Site, tmp_path: Path) -> None:
    bodies = {"resnet56": checkpoint_bytes(1), "vgg13": checkpoint_bytes(2)}
    for name, body in bodies.items():
        site.files[TEMPLATE.format(name=name)] = body
    verified = []

    def verify(name: str, path: Path) -> None:
        verified.append((name, path, path.read_bytes() == bodies[name]))

    paths = fetch_teachers(["resnet56", "vgg13"], tmp_path, sources=[site.url(TEMPLATE)], verify=verify, timeout=5)

    assert paths == [tmp_path / "resnet56_vanilla/ckpt_epoch_240.pth", tmp_path / "vgg13_vanilla/ckpt_epoch_240.pth"]
    for name, path in zip(bodies, paths):
        assert path.read_bytes() == bodies[name]
        digest = hashlib.sha256(bodies[name]).hexdigest()
        assert path.with_name("ckpt_epoch_240.pth.sha256").read_text() == f"{digest}  ckpt_epoch_240.pth\n"
        assert torch.equal(torch.load(path, weights_only=True)["model"]["fc.weight"],
                           torch.load(io.BytesIO(bodies[name]), weights_only=True)["model"]["fc.weight"])
    assert verified == [("resnet56", paths[0], True), ("vgg13", paths[1], True)]
    # Nothing half-written or cached is left behind.
    assert files_under(tmp_path) == {f"{name}_vanilla/ckpt_epoch_240.pth{suffix}"
                                     for name in bodies for suffix in ("", ".sha256")}
    assert not (tmp_path / ".downloads").exists()


def test_url_to_a_single_pth_serves_exactly_one_teacher(site: Site, tmp_path: Path) -> None:
    body = checkpoint_bytes(3)
    site.files["/mirror/r110.pth"] = body

    [path] = fetch_quietly(["resnet110"], tmp_path, url=site.url("/mirror/r110.pth"))
    assert path == checkpoint_path(tmp_path, "resnet110") and path.read_bytes() == body

    with pytest.raises(UserError, match=r"serves one teacher, but 2 were asked for"):
        fetch_quietly(["wrn_40_2", "vgg13"], tmp_path / "other", url=site.url("/mirror/r110.pth"))
    assert not (tmp_path / "other" / "wrn_40_2_vanilla").exists()


def test_tar_extracts_only_the_requested_members(site: Site, tmp_path: Path) -> None:
    bodies = {"resnet56": checkpoint_bytes(4), "vgg13": checkpoint_bytes(5)}
    members = {f"cifar_teachers/{name}_vanilla/ckpt_epoch_240.pth": body for name, body in bodies.items()}
    members["cifar_teachers/README.txt"] = b"unrelated"
    site.files["/releases/cifar_teachers.tar"] = tar_bytes(members)
    save_dir = tmp_path / "save" / "models"

    [path] = fetch_quietly(["resnet56"], save_dir, sources=[site.url("/releases/cifar_teachers.tar")])

    assert path.read_bytes() == bodies["resnet56"]
    # Only the asked-for member came out, and the downloaded tar was removed.
    assert files_under(tmp_path) == {"save/models/resnet56_vanilla/ckpt_epoch_240.pth",
                                     "save/models/resnet56_vanilla/ckpt_epoch_240.pth.sha256"}

    with pytest.raises(UserError, match=r"no member ending in wrn_40_2_vanilla/ckpt_epoch_240.pth "
                                        r"\(it offers: resnet56, vgg13\)"):
        fetch_quietly(["wrn_40_2"], save_dir, sources=[site.url("/releases/cifar_teachers.tar")])


@pytest.mark.parametrize("member, symlink", [("../evil", None), ("/tmp/evil-absolute", None),
                                             ("cifar_teachers/evil-link", "../../evil")])
def test_tar_with_a_member_escaping_the_target_is_refused(site: Site, tmp_path: Path, member: str,
                                                          symlink: str | None) -> None:
    good = {"cifar_teachers/resnet56_vanilla/ckpt_epoch_240.pth": checkpoint_bytes(6)}
    if symlink is None:
        site.files["/evil.tar"] = tar_bytes({**good, member: b"pwned"})
    else:
        site.files["/evil.tar"] = tar_bytes(good, symlinks={member: symlink})
    save_dir = tmp_path / "root" / "models"

    with pytest.raises(UserError, match=rf"refusing archive .*evil.tar: member '{re.escape(member)}' escapes"):
        fetch_quietly(["resnet56"], save_dir, sources=[site.url("/evil.tar")])

    assert files_under(tmp_path) == set()  # not even the good member, and the download was removed
    assert not Path("/tmp/evil-absolute").exists()


def test_local_file_source_takes_a_tar_or_a_pth(tmp_path: Path) -> None:
    bodies = {"wrn_40_2": checkpoint_bytes(7), "ResNet50": checkpoint_bytes(8)}
    archive = tmp_path / "cifar_teachers.tar"
    archive.write_bytes(tar_bytes({f"./{name}_vanilla/ckpt_epoch_240.pth": body for name, body in bodies.items()}))
    single = tmp_path / "vgg13.pth"
    single.write_bytes(checkpoint_bytes(9))
    save_dir = tmp_path / "models"

    paths = fetch_quietly(["wrn_40_2", "ResNet50"], save_dir, file=archive)
    [vgg] = fetch_quietly(["vgg13"], save_dir, file=single)

    assert [path.read_bytes() for path in paths] == list(bodies.values())
    assert vgg.read_bytes() == single.read_bytes()
    assert archive.exists() and single.exists()  # the user's files are read, never moved or deleted
    with pytest.raises(UserError, match=r"no such file .*missing.tar"):
        fetch_quietly(["resnet56"], save_dir, file=tmp_path / "missing.tar")
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(tar_bytes({"resnet56_vanilla/ckpt_epoch_240.pth": checkpoint_bytes(18)})[:2048])
    with pytest.raises(UserError, match=r"truncated.tar \(unreadable tar \("):
        fetch_quietly(["resnet56"], save_dir, file=truncated)
    assert not checkpoint_path(save_dir, "resnet56").exists() and not list(save_dir.rglob("*.part"))


def test_interrupted_transfer_resumes_with_a_range_request(site: Site, tmp_path: Path) -> None:
    body = checkpoint_bytes(10)
    path = TEMPLATE.format(name="resnet32x4")
    site.files[path] = body
    site.cuts[path] = [1, 5000]

    [installed] = fetch_teachers(["resnet32x4"], tmp_path, sources=[site.url(TEMPLATE)], timeout=5)  # with tqdm

    assert site.requests == [(path, None), (path, "bytes=5000-")]
    assert installed.read_bytes() == body


def test_partial_download_is_kept_and_resumed_by_the_next_call(site: Site, tmp_path: Path) -> None:
    body = checkpoint_bytes(11)
    path = TEMPLATE.format(name="resnet56")
    site.files[path] = body
    site.cuts[path] = [3, 4000]  # more cuts than one call's attempts

    with pytest.raises(UserError, match=r"stopped after 12000 of \d+ bytes; 3 attempts, .*run again to resume"):
        fetch_quietly(["resnet56"], tmp_path, sources=[site.url(TEMPLATE)])
    [part] = (tmp_path / ".downloads").glob("*.part")
    assert part.read_bytes() == body[:12000]
    assert not checkpoint_path(tmp_path, "resnet56").exists()

    [installed] = fetch_quietly(["resnet56"], tmp_path, sources=[site.url(TEMPLATE)])

    assert site.requests[-1] == (path, "bytes=12000-")
    assert installed.read_bytes() == body
    assert not part.exists()


def test_server_ignoring_range_makes_the_download_restart(site: Site, tmp_path: Path) -> None:
    body = checkpoint_bytes(12)
    path = TEMPLATE.format(name="vgg13")
    site.files[path] = body
    site.cuts[path] = [1, 3000]
    site.honour_range = False  # answers 200 with the whole file, as many static servers do

    [installed] = fetch_quietly(["vgg13"], tmp_path, sources=[site.url(TEMPLATE)])

    assert site.requests == [(path, None), (path, "bytes=3000-")]
    assert installed.read_bytes() == body  # not the first 3000 bytes twice


def test_sources_are_tried_in_order_until_one_serves(site: Site, tmp_path: Path) -> None:
    body = checkpoint_bytes(13)
    site.files["/cifar_teachers.tar"] = tar_bytes({"cifar_teachers/resnet110_vanilla/ckpt_epoch_240.pth": body})
    refused = f"http://127.0.0.1:{free_port()}/repo/{{name}}_vanilla/ckpt_epoch_240.pth"

    [installed] = fetch_quietly(["resnet110"], tmp_path,
                                sources=[refused, site.url("/missing" + TEMPLATE), site.url("/cifar_teachers.tar")])

    assert installed.read_bytes() == body
    assert [path for path, _ in site.requests] == ["/missing/repo/resnet110_vanilla/ckpt_epoch_240.pth",
                                                   "/cifar_teachers.tar"]


def test_sha256_is_verified_on_later_calls_and_a_tampered_file_is_an_error(site: Site, tmp_path: Path) -> None:
    body = checkpoint_bytes(14)
    site.files[TEMPLATE.format(name="resnet56")] = body
    [path] = fetch_quietly(["resnet56"], tmp_path, sources=[site.url(TEMPLATE)])
    recorded = path.with_name("ckpt_epoch_240.pth.sha256").read_text()

    assert fetch_quietly(["resnet56"], tmp_path, sources=[site.url(TEMPLATE)]) == [path]
    assert len(site.requests) == 1  # the second call verified the file on disk instead of downloading

    path.write_bytes(body[:-1] + bytes([body[-1] ^ 1]))
    with pytest.raises(UserError, match=r"has sha256 [0-9a-f]{64} but .*\.sha256 recorded [0-9a-f]{64}"):
        fetch_quietly(["resnet56"], tmp_path, sources=[site.url(TEMPLATE)])
    assert path.read_bytes() != body  # not silently replaced
    assert path.with_name("ckpt_epoch_240.pth.sha256").read_text() == recorded
    assert len(site.requests) == 1


def test_a_download_that_differs_from_the_recorded_sha256_is_not_installed(site: Site, tmp_path: Path) -> None:
    site.files[TEMPLATE.format(name="resnet56")] = checkpoint_bytes(15)
    [path] = fetch_quietly(["resnet56"], tmp_path, sources=[site.url(TEMPLATE)])
    path.unlink()  # the record stays
    site.files[TEMPLATE.format(name="resnet56")] = checkpoint_bytes(16)  # the mirror now serves other weights

    with pytest.raises(UserError, match=r"its sha256 [0-9a-f]{64} differs from [0-9a-f]{64} recorded"):
        fetch_quietly(["resnet56"], tmp_path, sources=[site.url(TEMPLATE)])
    assert not path.exists()
    # The rejected download is not kept to resume.
    assert files_under(tmp_path) == {"resnet56_vanilla/ckpt_epoch_240.pth.sha256"}


def test_all_sources_failing_is_one_user_error_naming_each_source(site: Site, tmp_path: Path) -> None:
    site.stalled.add("/slow.tar")
    refused = f"http://127.0.0.1:{free_port()}/repo/{{name}}_vanilla/ckpt_epoch_240.pth"
    sources = [refused, site.url(TEMPLATE), site.url("/slow.tar")]

    with pytest.raises(UserError) as caught:
        fetch_teachers(["resnet56", "vgg13"], tmp_path, sources=sources, progress=False, timeout=0.5)

    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("could not fetch teacher(s) resnet56, vgg13: tried ")
    assert f"{refused} (" in message and "refused" in message.lower()
    assert f"{site.url(TEMPLATE)} (HTTP 404" in message
    assert f"{site.url('/slow.tar')} (timed out)" in message
    assert "--url URL" in message and "--file PATH" in message
    assert files_under(tmp_path) == set()


class _MakeDirectoryWhenUnpickled:
    """A pickle payload: unpickling it runs os.makedirs, as a malicious checkpoint would run anything."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return os.makedirs, (self.path,)


def _saved(payload: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def test_a_pickle_that_is_not_weights_only_loadable_is_rejected(site: Site, tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    payload = _saved({"model": {"fc.weight": torch.zeros(2)}, "hook": _MakeDirectoryWhenUnpickled(marker)})
    site.files[TEMPLATE.format(name="resnet56")] = payload
    save_dir = tmp_path / "models"

    with pytest.raises(UserError, match=r"could run code when unpickled"):
        fetch_quietly(["resnet56"], save_dir, sources=[site.url(TEMPLATE)])

    assert not marker.exists()
    assert files_under(save_dir) == set()
    torch.load(io.BytesIO(payload), weights_only=False)  # the payload is live: a plain load would have run it
    assert marker.exists()


@pytest.mark.parametrize("payload, complaint", [
    ({"state_dict": {"fc.weight": torch.zeros(2)}}, r"found \['state_dict'\]"),
    ({"model": {"fc.weight": "not a tensor"}}, r"found \['model'\]"),
    (torch.zeros(3), r"found Tensor"),
])
def test_a_loadable_file_without_a_model_state_dict_is_rejected(site: Site, tmp_path: Path, payload: object,
                                                                complaint: str) -> None:
    site.files[TEMPLATE.format(name="vgg13")] = _saved(payload)
    with pytest.raises(UserError, match=rf"is not a RepDistiller checkpoint \({complaint}\)"):
        fetch_quietly(["vgg13"], tmp_path, sources=[site.url(TEMPLATE)])
    assert not checkpoint_path(tmp_path, "vgg13").exists()


def test_a_checkpoint_placed_by_hand_is_checked_and_recorded_without_downloading(tmp_path: Path) -> None:
    good, bad = checkpoint_path(tmp_path, "resnet56"), checkpoint_path(tmp_path, "vgg13")
    good.parent.mkdir(parents=True)
    good.write_bytes(checkpoint_bytes(17))
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a checkpoint")
    unreachable = [f"http://127.0.0.1:{free_port()}/{{name}}.pth"]

    assert fetch_quietly(["resnet56"], tmp_path, sources=unreachable) == [good]
    assert good.with_name("ckpt_epoch_240.pth.sha256").read_text().split()[0] == \
        hashlib.sha256(good.read_bytes()).hexdigest()
    with pytest.raises(UserError, match=r"vgg13_vanilla/ckpt_epoch_240.pth is not .*; delete it to fetch"):
        fetch_quietly(["vgg13"], tmp_path, sources=unreachable)


@pytest.mark.parametrize("kwargs, complaint", [
    ({"names": ["../etc"]}, r"invalid teacher name '../etc'"),
    ({"names": []}, r"no teacher named"),
    ({"names": ["resnet56"], "url": "ftp://mirror/x.tar"}, r"--url 'ftp://mirror/x.tar' must be an http"),
    ({"names": ["resnet56"], "url": "http://127.0.0.1:9/x.tar", "file": "x.tar"}, r"--url or --file, not both"),
])
def test_bad_arguments_are_user_errors(tmp_path: Path, kwargs: dict, complaint: str) -> None:
    with pytest.raises(UserError, match=complaint):
        fetch_quietly(save_dir=tmp_path, **kwargs)
    assert files_under(tmp_path) == set()


def test_cli_fetch_teachers_from_a_local_file_measures_accuracy_when_data_exists(tmp_path, capsys):
    """The CLI path: --file installs the teacher where the seed expects it and reports its CIFAR-100 accuracy."""
    from data.fake_data import write_cifar100
    from distillers import cli
    from distillers.models import create_model

    data = write_cifar100(tmp_path / "data", n_train=10, n_test=20)
    source = tmp_path / "resnet8.pth"
    torch.save({"model": create_model("resnet8").state_dict(), "epoch": 240}, source)
    save_dir = tmp_path / "save" / "models"
    code = cli.main(["fetch-teachers", "resnet8", "--file", str(source), "--save-dir", str(save_dir),
                     "--data-dir", str(data.root), "--device", "cpu"])
    assert code == 0
    target = save_dir / "resnet8_vanilla" / "ckpt_epoch_240.pth"
    assert target.is_file() and (save_dir / "resnet8_vanilla" / "ckpt_epoch_240.pth.sha256").is_file()
    out = capsys.readouterr().out
    assert "resnet8: saved to" in out and "CIFAR-100 test top-1" in out
    # Offline with no source that works: one clear line, exit code 2.
    code = cli.main(["fetch-teachers", "resnet56", "--url", "http://127.0.0.1:9/none.pth", "--save-dir",
                     str(save_dir)])
    assert code == 2
    assert capsys.readouterr().err.count("\n") == 1
