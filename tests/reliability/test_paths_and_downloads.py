"""Where files go and what is fetched: names stay in the output folder, downloads are bounded.

Over real sockets: a small file host (`FileHost`, `http.server` in a thread) serves images,
redirect chains and loops, oversized, truncated, malformed and compressed answers; it also
answers as a minimal BFL-style API whose result URL is chosen per prompt, so that the whole
worker can be pointed at hostile output URLs. `runner.worker.download.download` is tested
directly and through the worker; file names from prompts, ids and templates through the job-file
loader and the CLI.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import io
import itertools
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

import anyio
import pytest
from PIL import Image

from runner import app
from runner.campaign import Limits, ProviderConfig
from runner.errors import InputError
from runner.jobfile import load_jobfile
from runner.naming import MAX_NAME_BYTES, job_fields, render_filename
from runner.store import Store, open_store
from runner.worker import download as download_module
from runner.worker.download import MAX_REDIRECTS, DownloadError, SavedFile, download, file_client
from runner.worker.pool import PoolOptions
from tests.acceptance.conftest import run_cli, runner_env
from tests.factories import campaign


def _png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buffer, "PNG")
    return buffer.getvalue()


PNG_A = _png((200, 30, 30))
PNG_B = _png((30, 30, 200))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
KEY = "reliability-test-key-0123456789"
# Names Windows gives to devices, whatever the extension: a file called so is no file there.
WINDOWS_RESERVED = {"con", "prn", "aux", "nul"} | {
    f"{port}{digit}" for port in ("com", "lpt") for digit in "0123456789"
}


# -- the file host ----------------------------------------------------------------------------


class FileHost(ThreadingHTTPServer):
    """Serves files in every way that can go wrong, and a minimal BFL-style API.

    `samples` maps a prompt to the result URL the API gives for it (a path is on this host).
    Every request for a file is recorded with its headers in `requests`.
    """

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _FileHandler)
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.samples: dict[str, str] = {}
        self.prompts: dict[str, str] = {}
        self._ids = itertools.count(1)
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def hits(self, prefix: str) -> int:
        with self.lock:
            return sum(1 for path, _ in self.requests if path.startswith(prefix))

    def new_task(self, prompt: str) -> str:
        with self.lock:
            task = f"t{next(self._ids)}"
            self.prompts[task] = prompt
            return task


class _FileHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FileHost

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(
        self,
        status: int,
        body: bytes = b"",
        ctype: str = "application/octet-stream",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self._send(302, b"", headers={"Location": location})

    def _stream(self, size: int, *, length: int | None, pause: float = 0.0) -> None:
        """A PNG signature then zeros, `size` bytes in all; Content-Length `length` if given."""
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        if length is None:
            self.send_header("Connection", "close")
        else:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        self.wfile.write(PNG_SIGNATURE)
        self.wfile.flush()
        if pause:
            time.sleep(pause)
        left = size - len(PNG_SIGNATURE)
        while left > 0:
            block = min(left, 64 * 1024)
            self.wfile.write(b"\0" * block)
            left -= block
        self.wfile.flush()
        self.close_connection = True
        if length is not None and length != size:
            self.connection.shutdown(socket.SHUT_RDWR)

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        if path == "/v1/get_result":
            self._result(query)
            return
        with self.server.lock:
            self.server.requests.append((path, {k.lower(): v for k, v in self.headers.items()}))
        kind, *args = path.strip("/").split("/")
        # the client may give up on purpose (a cap, a cancel)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._file(kind, args, query)

    def _file(self, kind: str, args: list[str], query: str) -> None:
        if kind == "png":
            self._send(200, PNG_A, "image/png")
        elif kind == "other":
            self._send(200, PNG_B, "image/png")
        elif kind == "redirect":
            left = int(args[0])
            if left > 0:
                self._redirect(f"/redirect/{left - 1}")
            else:
                self._send(200, PNG_A, "image/png")
        elif kind == "forever":
            self._redirect(f"/forever/{int(args[0]) + 1}")
        elif kind == "to":
            self._redirect(unquote(query))
        elif kind == "big":
            self._stream(int(args[0]), length=int(args[0]))
        elif kind == "unsized":
            self._stream(int(args[0]), length=None)
        elif kind == "truncated":
            self._stream(int(args[1]), length=int(args[0]))
        elif kind == "slow":
            self._stream(100_000, length=100_000, pause=float(args[0]))
        elif kind == "garbage":
            self.wfile.write(b"garbage\r\nX: y\r\n\r\n")
            self.close_connection = True
        elif kind == "status":
            self._send(int(args[0]), b"no file here\n", "text/plain")
        elif kind == "text":
            self._send(200, b"hello, I am not an image\n", "text/plain")
        elif kind == "gzip":
            if "gzip" in (self.headers.get("accept-encoding") or ""):
                body = gzip.compress(PNG_A)
                self._send(200, body, "image/png", {"Content-Encoding": "gzip"})
            else:
                self._send(200, PNG_A, "image/png")
        else:
            self._send(404, b"unknown\n", "text/plain")

    def do_POST(self) -> None:
        """BFL-style create: `POST /v1/{model}` with the input as the body."""
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        task = self.server.new_task(str(body.get("prompt", "")))
        polling = f"{self.server.url}/v1/get_result?id={task}"
        self._send(200, json.dumps({"id": task, "polling_url": polling}).encode(), "json")

    def _result(self, query: str) -> None:
        task = parse_qs(query).get("id", [""])[0]
        prompt = self.server.prompts.get(task)
        if prompt is None:
            self._send(200, json.dumps({"id": task, "status": "Task not found"}).encode())
            return
        sample = self.server.samples.get(prompt, "/png/default")
        if sample.startswith("/"):
            sample = self.server.url + sample
        answer = {"id": task, "status": "Ready", "result": {"sample": sample}}
        self._send(200, json.dumps(answer).encode(), "application/json")


@pytest.fixture
def host() -> Iterator[FileHost]:
    server = FileHost()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def fetch(
    url: str,
    folder: Path,
    *,
    name: Callable[[str], str] = lambda ext: f"image.{ext}",
    tag: str = "c1.k1.1",
    max_bytes: int | None = None,
    cancel_after: float | None = None,
) -> SavedFile | None:
    """`download()` with a fresh file client, bounded in time; None when cancelled."""

    async def main() -> SavedFile | None:
        async with file_client(timeout=20) as client:
            with anyio.fail_after(60):
                if cancel_after is None:
                    return await download(client, url, folder, name, tag, max_bytes=max_bytes)
                with anyio.move_on_after(cancel_after):
                    return await download(client, url, folder, name, tag, max_bytes=max_bytes)
                return None

    return anyio.run(main)


def refused(url: str, folder: Path, **kwargs: Any) -> DownloadError:
    with pytest.raises(DownloadError) as info:
        fetch(url, folder, **kwargs)
    return info.value


def entries(folder: Path) -> list[str]:
    """Everything in `folder`, hidden temporary files included; [] when it does not exist."""
    return sorted(os.listdir(folder)) if folder.exists() else []


def files_of(folder: Path) -> list[str]:
    """`entries`, without the provenance sidecar (`<image>.json`) the worker may write beside
    each image it saved."""
    names = entries(folder)
    return [n for n in names if not (n.endswith(".json") and n.removesuffix(".json") in names)]


# -- download(): what is fetched --------------------------------------------------------------


@pytest.mark.usefixtures("spool")
def test_a_file_is_saved_whole_and_the_file_host_sees_no_credentials(
    host: FileHost, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    saved = fetch(f"{host.url}/png/a", out)
    assert saved is not None
    assert Path(saved.path) == out / "image.png"
    assert (out / "image.png").read_bytes() == PNG_A
    assert saved.sha256 == hashlib.sha256(PNG_A).hexdigest() and saved.bytes == len(PNG_A)
    assert entries(out) == ["image.png"]
    ((_, headers),) = host.requests
    assert not {"authorization", "x-key", "cookie", "proxy-authorization"} & set(headers)
    assert headers["accept-encoding"] == "identity"


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "FILE:///etc/hostname",
        "ftp://127.0.0.1/image.png",
        "data:image/png;base64," + base64.b64encode(PNG_A).decode(),
        "gopher://127.0.0.1/1",
        "javascript:alert(1)",
        "/etc/passwd",
        "image.png",
        "",
    ],
)
def test_only_http_and_https_urls_are_downloaded(url: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    error = refused(url, out)
    assert "only http and https URLs are downloaded" in str(error)
    assert error.gone  # asking again cannot help
    assert entries(out) == []


@pytest.mark.parametrize(
    "target", ["file:///etc/passwd", "ftp://127.0.0.1/x.png", "data:image/png;base64,AAAA"]
)
def test_a_redirect_to_another_scheme_is_not_followed(
    host: FileHost, tmp_path: Path, target: str
) -> None:
    out = tmp_path / "out"
    error = refused(f"{host.url}/to?{target}", out)
    assert "only http and https URLs are downloaded" in str(error), error
    assert entries(out) == []


@pytest.mark.parametrize("hops", [1, 3, MAX_REDIRECTS])
def test_redirects_are_followed_up_to_the_limit(host: FileHost, tmp_path: Path, hops: int) -> None:
    saved = fetch(f"{host.url}/redirect/{hops}", tmp_path / "out")
    assert saved is not None and Path(saved.path).read_bytes() == PNG_A
    assert host.hits("/redirect/") == hops + 1


def test_one_redirect_more_than_the_limit_fails(host: FileHost, tmp_path: Path) -> None:
    out = tmp_path / "out"
    error = refused(f"{host.url}/redirect/{MAX_REDIRECTS + 1}", out)
    assert f"redirected more than {MAX_REDIRECTS} times" in str(error)
    assert entries(out) == []


def test_a_redirect_loop_is_given_up_after_the_limit(host: FileHost, tmp_path: Path) -> None:
    out = tmp_path / "out"
    started = time.monotonic()
    error = refused(f"{host.url}/forever/0", out)
    assert f"redirected more than {MAX_REDIRECTS} times" in str(error)
    assert not error.gone
    assert host.hits("/forever/") == MAX_REDIRECTS + 1
    assert time.monotonic() - started < 10
    assert entries(out) == []


@pytest.fixture(params=["in memory", "spilled to disk"])
def spool(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bodies up to SPOOL bytes are held in memory; larger ones go on to the temporary file
    as they come. Tests using this run both ways (a 1 KiB spool makes every body spill)."""
    if request.param == "spilled to disk":
        monkeypatch.setattr(download_module, "SPOOL", 1024)


@pytest.mark.parametrize("route", ["big", "unsized"])
@pytest.mark.usefixtures("spool")
def test_the_size_cap_stops_the_download_and_leaves_nothing(
    host: FileHost, tmp_path: Path, route: str
) -> None:
    """With a Content-Length over the cap the answer is refused at once; without one, the
    download stops as soon as the cap is passed."""
    out = tmp_path / "out"
    cap = 64 * 1024
    error = refused(f"{host.url}/{route}/{8 * 1024 * 1024}", out, max_bytes=cap)
    assert f"cap of {cap} bytes" in str(error)
    assert not error.gone
    assert entries(out) == []


@pytest.mark.parametrize("route", ["big", "unsized"])
@pytest.mark.usefixtures("spool")
def test_a_file_of_exactly_the_cap_is_accepted_and_one_byte_more_is_not(
    host: FileHost, tmp_path: Path, route: str
) -> None:
    cap = 100_000
    saved = fetch(f"{host.url}/{route}/{cap}", tmp_path / "ok", max_bytes=cap)
    assert saved is not None and saved.bytes == cap
    assert os.path.getsize(saved.path) == cap
    refused(f"{host.url}/{route}/{cap + 1}", tmp_path / "over", max_bytes=cap)
    assert entries(tmp_path / "over") == []


def test_the_default_cap_is_the_module_constant_read_at_each_call(
    host: FileHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert download_module.MAX_BYTES >= 50 * 1024 * 1024  # room for the largest FLUX outputs
    monkeypatch.setattr(download_module, "MAX_BYTES", 10_000)
    error = refused(f"{host.url}/unsized/20000", tmp_path / "out")
    assert "cap of 10000 bytes" in str(error)


@pytest.mark.usefixtures("spool")
def test_a_truncated_body_is_an_error_and_leaves_nothing(host: FileHost, tmp_path: Path) -> None:
    out = tmp_path / "out"
    error = refused(f"{host.url}/truncated/50000/1000", out)
    assert "1000 of 50000 bytes" in str(error), error
    assert not error.gone
    assert entries(out) == []


def test_a_malformed_answer_is_a_download_error(host: FileHost, tmp_path: Path) -> None:
    """Not a raw transport exception, which the worker would take for a bug in runner."""
    out = tmp_path / "out"
    error = refused(f"{host.url}/garbage", out)
    assert "status line" in str(error).lower(), error
    assert entries(out) == []


@pytest.mark.parametrize(
    ("status", "gone"), [(403, True), (404, True), (410, True), (500, False), (206, False)]
)
def test_http_errors_fail_and_say_whether_the_url_is_gone(
    host: FileHost, tmp_path: Path, status: int, gone: bool
) -> None:
    out = tmp_path / "out"
    error = refused(f"{host.url}/status/{status}", out)
    assert f"HTTP {status}" in str(error) and error.gone is gone
    assert entries(out) == []


def test_what_is_not_an_image_is_not_kept(host: FileHost, tmp_path: Path) -> None:
    out = tmp_path / "out"
    error = refused(f"{host.url}/text", out)
    assert "not an image" in str(error)
    assert entries(out) == []


def test_the_file_is_stored_as_served_not_compressed(host: FileHost, tmp_path: Path) -> None:
    saved = fetch(f"{host.url}/gzip", tmp_path / "out")
    assert saved is not None and Path(saved.path).read_bytes() == PNG_A


@pytest.mark.usefixtures("spool")
def test_an_interrupted_download_leaves_no_temporary_file(host: FileHost, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert fetch(f"{host.url}/slow/5", out, cancel_after=0.5) is None
    assert entries(out) == []


# -- download(): where it goes ----------------------------------------------------------------


def test_an_existing_file_with_other_content_is_never_overwritten(
    host: FileHost, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "image.png").write_bytes(b"precious, made by someone else")
    saved = fetch(f"{host.url}/png/a", out)
    assert saved is not None and Path(saved.path) == out / "image~2.png"
    assert (out / "image.png").read_bytes() == b"precious, made by someone else"
    assert (out / "image~2.png").read_bytes() == PNG_A
    # The same file again is recognised, not saved a third time.
    again = fetch(f"{host.url}/png/a", out)
    assert again is not None and Path(again.path) == out / "image~2.png"
    # Different content again gets a name of its own.
    other = fetch(f"{host.url}/other", out)
    assert other is not None and Path(other.path) == out / "image~3.png"
    assert entries(out) == ["image.png", "image~2.png", "image~3.png"]


def test_an_identical_existing_file_is_kept_as_it_is(host: FileHost, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "image.png").write_bytes(PNG_A)
    inode = (out / "image.png").stat().st_ino
    saved = fetch(f"{host.url}/png/a", out)
    assert saved is not None and Path(saved.path) == out / "image.png"
    assert (out / "image.png").stat().st_ino == inode
    assert entries(out) == ["image.png"]


@pytest.mark.parametrize("dangling", [True, False])
def test_a_symlink_at_the_name_is_never_written_through(
    host: FileHost, tmp_path: Path, dangling: bool
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    outside = tmp_path / "outside.png"
    if not dangling:
        outside.write_bytes(b"outside, not ours")
    (out / "image.png").symlink_to(outside)
    saved = fetch(f"{host.url}/png/a", out)
    assert saved is not None and Path(saved.path) == out / "image~2.png"
    if dangling:
        assert not outside.exists()
    else:
        assert outside.read_bytes() == b"outside, not ours"


@pytest.mark.parametrize(
    "name", ["../escape.png", "ABSOLUTE", "sub/image.png", "..", ".", "", "a\0b"]
)
def test_a_file_name_that_is_not_one_name_in_the_folder_is_refused(
    host: FileHost, tmp_path: Path, name: str
) -> None:
    out = tmp_path / "deep" / "out"
    if name == "ABSOLUTE":
        name = str(tmp_path / "absolute.png")
    before = set(tmp_path.rglob("*"))
    error = refused(f"{host.url}/png/a", out, name=lambda ext: name)
    assert "must be one name" in str(error)
    assert entries(out) == []
    assert set(tmp_path.rglob("*")) - before <= {out, out.parent}


@pytest.mark.parametrize("tag", ["../../../escape/x", "a/b\\c", "nul\0byte", "x" * 600, ".."])
def test_a_hostile_tag_keeps_the_temporary_file_in_the_folder(
    host: FileHost, tmp_path: Path, tag: str
) -> None:
    out = tmp_path / "out"
    saved = fetch(f"{host.url}/png/a", out, tag=tag)
    assert saved is not None and Path(saved.path).parent == out
    assert entries(out) == ["image.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# -- through the worker -----------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(str(tmp_path / "runner.db"))
    yield s
    s.close()


def work(store: Store, host: FileHost, out: Path, samples: dict[str, str]) -> dict[str, Any]:
    """Run a campaign of one job per sample (prompts "prompt 0", ...) against the host's API."""
    host.samples = {f"prompt {i}": url for i, url in enumerate(samples.values())}
    provider = ProviderConfig("bfl", "bfl", host.url, "x-key", "RUNNER_TEST_KEY")
    limits = Limits(max_in_flight=8)
    store.enqueue(campaign(n=len(samples), out=out, provider=provider, limits=limits))

    async def main() -> None:
        with anyio.fail_after(90):
            await app.work(
                store,
                ["c1"],
                options=PoolOptions(tick=0.05),
                handle_signals=False,
                progress_every=0,
            )

    anyio.run(main)
    by_index = {job.index: job for job in store.jobs("c1")}
    return {label: by_index[i + 1] for i, label in enumerate(samples)}


@pytest.fixture
def key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNNER_TEST_KEY", KEY)


@pytest.mark.usefixtures("key_env")
def test_the_worker_refuses_output_urls_that_are_not_http(
    host: FileHost, store: Store, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    jobs = work(
        store,
        host,
        out,
        {
            "file": "file:///etc/passwd",
            "ftp": "ftp://127.0.0.1/x.png",
            "data": "data:image/png;base64," + base64.b64encode(PNG_A).decode(),
            "fine": "/png/fine",
        },
    )
    for label in ("file", "ftp", "data"):
        job = jobs[label]
        assert job.state.value == "expired", (label, job.state, job.error)
        assert "only http and https URLs are downloaded" in (job.error or "")
        assert not job.files
    assert jobs["fine"].state.value == "done"
    assert files_of(out) == ["00004-prompt-3.png"]
    assert all(KEY not in str(headers) for _, headers in host.requests)


@pytest.mark.usefixtures("key_env")
def test_the_worker_gives_up_on_loops_oversized_and_truncated_files(
    host: FileHost, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(download_module, "MAX_BYTES", 64 * 1024)
    out = tmp_path / "out"
    jobs = work(
        store,
        host,
        out,
        {
            "loop": "/forever/0",
            "oversized": "/big/1000000",
            "oversized-unsized": "/unsized/1000000",
            "truncated": "/truncated/50000/1000",
            "garbage": "/garbage",
            "three-redirects": "/redirect/3",
        },
    )
    expected = {
        "loop": f"redirected more than {MAX_REDIRECTS} times",
        "oversized": "cap of 65536 bytes",
        "oversized-unsized": "cap of 65536 bytes",
        "truncated": "1000 of 50000 bytes",
        "garbage": "status line",
    }
    for label, words in expected.items():
        job = jobs[label]
        assert job.state.value == "failed", (label, job.state, job.error)
        assert "download failed" in (job.error or "") and words in (job.error or ""), job.error
    assert jobs["three-redirects"].state.value == "done"
    assert files_of(out) == ["00006-prompt-5.png"]  # nothing partial, nothing hidden
    assert not any("transfer-encoding" in headers for _, headers in host.requests)


@pytest.mark.usefixtures("key_env")
def test_the_worker_never_overwrites_a_file_already_there(
    host: FileHost, store: Store, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "00001-prompt-0.png").write_bytes(b"the user's own file")
    jobs = work(store, host, out, {"one": "/png/one"})
    job = jobs["one"]
    assert job.state.value == "done"
    (record,) = job.files
    assert record["path"] == str(out / "00001-prompt-0~2.png")
    assert (out / "00001-prompt-0.png").read_bytes() == b"the user's own file"
    assert (out / "00001-prompt-0~2.png").read_bytes() == PNG_A


# -- names from prompts, ids and templates ----------------------------------------------------

HOSTILE_PROMPTS = [
    "../../etc/passwd",
    "..\\..\\Windows\\System32\\drivers\\etc\\hosts",
    "/absolute/path/to/file",
    "tab\tand two spaces  between",
    "x" * 10_000,
    "CON",
    "nul.txt",
    "com1",
    "!!! ??? ***",
    "....",
    "😀 🔥 ﬁ ß Æ",
    'a:b*c?d"e<f>g|h',
]
CONTROL_PROMPTS = [
    "a\x00b/../c",
    "\x1b[31mred\x1b[0m",
    "bell\x07",
    "line\nbreak",
    "cr\rhere",
    "del\x7f",
]
HOSTILE_IDS = ["CON", "nul", "Aux", "PRN", "com1", "LPT9", "aux.txt", "..", ".hidden", "a.b", "-"]


def assert_safe_name(name: str, folder: Path) -> None:
    assert name and name not in (".", "..")
    assert "/" not in name and "\\" not in name
    assert not any(ord(c) < 32 or ord(c) == 127 for c in name), repr(name)
    assert not name.startswith("."), name
    assert not name.endswith((".", " ")), name
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES
    assert name.split(".")[0].strip().lower() not in WINDOWS_RESERVED, name
    assert (folder / name).resolve().parent == folder.resolve()


def _jobfile(folder: Path, template: str, entries_: list[dict[str, Any]]) -> Path:
    lines = "\n".join(json.dumps(entry) for entry in entries_)
    (folder / "prompts.jsonl").write_text(lines + "\n", encoding="utf-8")
    path = folder / "jobs.yaml"
    path.write_text(
        "campaign: names\nprovider: bfl\nmodel: flux-pro-1.1\n"
        "input: {width: 256, height: 256, output_format: png}\n"
        f"prompts_file: prompts.jsonl\noutput: {{dir: out, name: {json.dumps(template)}}}\n",
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize(
    ("template", "entries_"),
    [
        ("{index:05d}-{slug}.{ext}", [{"prompt": p} for p in HOSTILE_PROMPTS]),
        ("{slug}-{key}-{model}.{ext}", [{"prompt": p} for p in HOSTILE_PROMPTS]),
        ("{id}.{ext}", [{"prompt": f"prompt {i}", "id": n} for i, n in enumerate(HOSTILE_IDS)]),
        ("{id}", [{"prompt": f"prompt {i}", "id": n} for i, n in enumerate(HOSTILE_IDS)]),
    ],
)
def test_names_from_hostile_prompts_and_ids_are_safe(
    tmp_path: Path, template: str, entries_: list[dict[str, Any]]
) -> None:
    loaded = load_jobfile(_jobfile(tmp_path, template, entries_))
    folder = Path(loaded.settings.output_dir)
    assert folder == tmp_path / "out"
    names = set()
    for job in loaded.jobs:
        for ext, outputs in (("png", 1), ("webp", 3), ("../x", 1), ("", 1)):
            for n in range(1, outputs + 1):
                name = render_filename(
                    loaded.settings.filename_template,
                    job_fields(loaded.settings.name, job),
                    ext=ext,
                    n=n,
                    outputs=outputs,
                )
                assert_safe_name(name, folder)
                if ext == "png":
                    names.add(name.casefold())
    assert len(names) == len(loaded.jobs)  # one file per job, even on a case-blind disk


@pytest.mark.parametrize("prompt", CONTROL_PROMPTS)
@pytest.mark.parametrize("template", ["{index}-{slug}.{ext}", "{id}-{key}.{ext}"])
def test_control_characters_and_nul_in_prompts_are_refused_or_made_harmless(
    tmp_path: Path, prompt: str, template: str
) -> None:
    path = _jobfile(tmp_path, template, [{"prompt": "first"}, {"prompt": prompt}])
    try:
        loaded = load_jobfile(path)
    except InputError as exc:
        assert "prompts.jsonl" in str(exc) and "line 2" in str(exc), exc  # refused, saying where
        return
    for job in loaded.jobs:
        fields = job_fields("names", job)
        name = render_filename(template, fields, ext="png", n=1, outputs=1)
        assert_safe_name(name, tmp_path / "out")


@pytest.mark.slow
@pytest.mark.parametrize("template", ["{id}.{ext}", "{index}-{slug}.{ext}"])
def test_a_real_run_with_hostile_names_writes_only_inside_the_output_folder(
    tmp_path: Path, template: str
) -> None:
    if "{id}" in template:
        entries_ = [{"prompt": f"prompt {i}", "id": n} for i, n in enumerate(HOSTILE_IDS)]
    else:
        # The simulator draws the prompt with a Latin-1 bitmap font, and answers 500 for an
        # image whose prompt has other characters: those prompts are checked by the loader only.
        entries_ = [{"prompt": p} for p in HOSTILE_PROMPTS if max(map(ord, p)) < 256]
    work_dir = tmp_path / "work"
    work_dir.mkdir()
    path = _jobfile(work_dir, template, entries_)
    done = run_cli("run", str(path), "--simulate", cwd=work_dir, env=runner_env())
    assert done.returncode == 0, done.stderr[-3000:]
    out = work_dir / "out"
    names = files_of(out)
    assert len(names) == len(entries_)
    for name in names:
        assert_safe_name(name, out)
        assert (out / name).is_file()
    # Nothing anywhere else: only the job file, its prompts, the database and the output folder.
    outside = {p.relative_to(tmp_path).parts[:2] for p in tmp_path.rglob("*")}
    allowed = {("work",), ("work", "out"), ("work", "jobs.yaml"), ("work", "prompts.jsonl")}
    allowed |= {("work", f"runner.db{s}") for s in ("", "-wal", "-shm", "-journal")}
    assert outside <= allowed, outside - allowed


@pytest.mark.parametrize(
    "template",
    [
        "../{key}.{ext}",
        "../../{index}",
        "/tmp/runner-{key}.{ext}",
        "{key}/../../x.{ext}",
        "sub/{key}.{ext}",
        "..\\{key}.{ext}",
        "{key}\\..\\x",
        "..{index}",
        "{index}..{ext}",
        "{prompt}.{ext}",
        "{key!r}.{ext}",
        "{key.__class__}",
        "{index[0]}",
        "{0}",
        "",
        "   ",
    ],
)
def test_a_template_that_could_leave_the_output_folder_is_refused_when_loading(
    tmp_path: Path, template: str
) -> None:
    path = _jobfile(tmp_path, template, [{"prompt": "../../etc/passwd"}])
    with pytest.raises(InputError) as info:
        load_jobfile(path)
    message = str(info.value)
    assert "output.name" in message and "\n" not in message, message


def test_the_cli_refuses_an_escaping_template_and_writes_nothing(tmp_path: Path) -> None:
    path = _jobfile(tmp_path, "../{key}.{ext}", [{"prompt": "a fox"}])
    before = sorted(p.name for p in tmp_path.iterdir())
    done = run_cli("submit", str(path), cwd=tmp_path, env=runner_env())
    assert done.returncode == 2
    assert "output.name" in done.stderr and "path separator" in done.stderr, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # not even a database
