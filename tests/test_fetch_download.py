"""Downloads: a Range-capable HTTP server on 127.0.0.1 in a thread, file:// URLs, a closed port."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from archive_builders import (  # noqa: F401  (clean_env is an autouse fixture)
    assert_one_line_error,
    cifar_python_archive,
    clean_env,
    md5,
    mnist_folder,
    official,
    run_isl,
    svhn_mats,
)

from isl_cli.data.sources import download, registry
from isl_cli.data.sources.fetch import prepare_dataset
from isl_cli.data.store import load_split
from isl_cli.errors import IslError

KEY = "cifar10/cifar-10-python.tar.gz"


class FileServer:
    """Serves `files` {path: bytes}; honours Range unless `ranges` is False; can cut a reply short."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.ranges = True
        self.cut_after: int | None = None  # send only this many body bytes, then close
        self.requests: list[tuple[str, str | None]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # noqa: N802
                server.requests.append((self.path, self.headers.get("Range")))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = 0
                wanted = self.headers.get("Range")
                if server.ranges and wanted and wanted.startswith("bytes="):
                    start = int(wanted[6:].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                part = body[start:]
                self.send_header("Content-Length", str(len(part)))
                self.end_headers()
                if server.cut_after is not None:
                    self.wfile.write(part[:server.cut_after])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(part)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = FileServer()
    yield srv
    srv.close()


@pytest.fixture
def cifar_served(tmp_path, monkeypatch, server):
    """A tiny cifar-10-python.tar.gz served over HTTP and registered as official."""
    archive = tmp_path / "src" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    expected = cifar_python_archive(archive)
    server.files["/cifar-10-python.tar.gz"] = archive.read_bytes()
    official(monkeypatch, KEY, archive)
    monkeypatch.setitem(registry.DOWNLOAD_URLS, KEY, (server.url("/cifar-10-python.tar.gz"),))
    return archive.read_bytes(), expected


def closed_port_url(path: str) -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def test_download_converts_and_caches(tmp_path, server, cifar_served):
    body, expected = cifar_served
    result = run_isl("fetch-data", "cifar10", "--root", tmp_path / "data")  # with the progress bar
    assert result.exit_code == 0, result.stderr
    cached = tmp_path / "data" / "downloads" / KEY
    assert cached.read_bytes() == body and not cached.with_name(cached.name + ".part").exists()
    train = load_split(tmp_path / "data" / "cifar10", "train")
    assert torch.equal(train.images, torch.from_numpy(expected.train_images))
    # a second data set folder from the same cache: no new request
    count = len(server.requests)
    assert run_isl("fetch-data", "cifar10", "--root", tmp_path / "data", "--name", "c10b", "-q").exit_code == 0
    assert len(server.requests) == count


def test_partial_file_is_resumed_with_a_range_request(tmp_path, server, cifar_served):
    body, _ = cifar_served
    part = tmp_path / "data" / "downloads" / (KEY + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(body[:1000])
    prepare_dataset("cifar10", tmp_path / "data", progress=False)
    assert server.requests == [("/cifar-10-python.tar.gz", "bytes=1000-")]
    assert (tmp_path / "data" / "downloads" / KEY).read_bytes() == body


def test_interrupted_transfer_keeps_the_part_and_the_next_run_resumes(tmp_path, server, cifar_served):
    body, _ = cifar_served
    server.cut_after = 700
    result = run_isl("fetch-data", "cifar10", "--root", tmp_path / "data", "-q")
    assert_one_line_error(result, "interrupted", "run the command again to resume")
    part = tmp_path / "data" / "downloads" / (KEY + ".part")
    assert part.read_bytes() == body[:700] and not (tmp_path / "data" / "cifar10").exists()
    server.cut_after = None
    assert run_isl("fetch-data", "cifar10", "--root", tmp_path / "data", "-q").exit_code == 0
    assert server.requests[-1] == ("/cifar-10-python.tar.gz", "bytes=700-")


def test_server_ignoring_range_restarts_from_zero(tmp_path, server, cifar_served):
    body, _ = cifar_served
    server.ranges = False
    part = tmp_path / "dl" / (KEY + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage!" * 10)
    path = download.fetch_file(KEY, tmp_path / "dl", progress=False)
    assert path.read_bytes() == body


def test_complete_part_answered_416_is_checked_and_used(tmp_path, server, cifar_served):
    body, _ = cifar_served
    part = tmp_path / "dl" / (KEY + ".part")
    part.parent.mkdir(parents=True)
    part.write_bytes(body)
    assert download.fetch_file(KEY, tmp_path / "dl", progress=False).read_bytes() == body


def test_checksum_mismatch_sets_the_file_aside(tmp_path, server, cifar_served, monkeypatch):
    monkeypatch.setitem(registry.OFFICIAL_MD5, KEY, "0" * 32)
    result = run_isl("fetch-data", "cifar10", "--root", tmp_path / "data", "-q")
    assert_one_line_error(result, "checksum mismatch", "set aside", ".corrupt", "not used")
    downloads = tmp_path / "data" / "downloads" / "cifar10"
    assert sorted(p.name for p in downloads.iterdir()) == ["cifar-10-python.tar.gz.corrupt"]
    assert not (tmp_path / "data" / "cifar10").exists()


def test_corrupt_cached_file_is_set_aside_and_downloaded_again(tmp_path, server, cifar_served):
    body, _ = cifar_served
    cached = tmp_path / "dl" / KEY
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"bitrot")
    assert download.fetch_file(KEY, tmp_path / "dl", progress=False).read_bytes() == body
    assert cached.with_name(cached.name + ".corrupt").read_bytes() == b"bitrot"


def test_no_network_names_the_url_and_source(tmp_path, monkeypatch):
    url = closed_port_url("/cifar-10-python.tar.gz")
    monkeypatch.setitem(registry.DOWNLOAD_URLS, KEY, (url,))
    result = run_isl("fetch-data", "cifar10", "--root", tmp_path / "data")
    assert_one_line_error(result, url, "--source PATH")
    assert not (tmp_path / "data" / "cifar10").exists()


def test_second_mirror_and_file_urls(tmp_path, monkeypatch):
    arrays = mnist_folder(tmp_path / "mirror")
    for f in registry.MNIST_FILES:
        key = f"mnist/{f}"
        official(monkeypatch, key, tmp_path / "mirror" / f)
        dead = closed_port_url(f"/{f}")
        monkeypatch.setitem(registry.DOWNLOAD_URLS, key, (dead, (tmp_path / "mirror" / f).as_uri()))
    prepare_dataset("mnist", tmp_path / "data", progress=False)
    test = load_split(tmp_path / "data" / "mnist", "test")
    assert torch.equal(test.labels, torch.from_numpy(arrays["t10k"][1])) and test.images.shape[-1] == 32


def test_svhn_download_verifies_each_file(tmp_path, monkeypatch, server):
    svhn_mats(tmp_path / "src")
    for name in ("train_32x32.mat", "test_32x32.mat"):
        server.files[f"/{name}"] = (tmp_path / "src" / name).read_bytes()
        official(monkeypatch, f"svhn/{name}", tmp_path / "src" / name)
        monkeypatch.setitem(registry.DOWNLOAD_URLS, f"svhn/{name}", (server.url(f"/{name}"),))
    prepare_dataset("svhn", tmp_path / "data", progress=False)
    assert md5(tmp_path / "data" / "downloads" / "svhn" / "test_32x32.mat") == md5(tmp_path / "src" / "test_32x32.mat")
    assert len(load_split(tmp_path / "data" / "svhn", "train")) == 7


def test_unknown_download_key_is_an_error(tmp_path):
    with pytest.raises(IslError, match="no download location"):
        download.fetch_file("nothing/here.bin", tmp_path, progress=False)


def test_missing_file_on_the_server(tmp_path, server, monkeypatch):
    monkeypatch.setitem(registry.DOWNLOAD_URLS, KEY, (server.url("/gone.tar.gz"),))
    line = assert_one_line_error(run_isl("fetch-data", "cifar10", "--root", tmp_path, "-q"),
                                 "HTTP 404", "--source PATH")
    assert "no network" not in line
