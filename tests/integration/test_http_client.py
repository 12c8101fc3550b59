"""The HTTP clients the worker talks through: no cookies kept, and the event loop they run on."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import anyio
import httpx
import pytest

from runner.cli import _run_async
from runner.providers.factory import CookielessClient, fast_transport
from runner.worker.download import download, file_client

PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)


class _CookieHost(BaseHTTPRequestHandler):
    """/set answers with a Set-Cookie; any other path echoes the Cookie header it got. Under
    /img/ the answer is a PNG (for the file client), and the Cookie header is kept instead."""

    cookies_seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        body = (self.headers.get("Cookie") or "none").encode()
        if self.path.startswith("/img/"):
            self.cookies_seen.append(body.decode())
            body = PNG
        self.send_response(200)
        if self.path.endswith("/set"):
            self.send_header("Set-Cookie", "session=abc; Path=/")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def cookie_host() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CookieHost)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.timeout(20)
def test_a_cookie_the_api_host_sets_is_never_sent_back(cookie_host: str) -> None:
    async def main() -> tuple[str, str, int]:
        async with CookielessClient(transport=fast_transport(4)) as client:
            first = await client.get(f"{cookie_host}/set")
            again = await client.get(f"{cookie_host}/echo")
            return first.headers["set-cookie"], again.text, len(client.cookies)

    set_cookie, echoed, kept = anyio.run(main)
    assert set_cookie.startswith("session=abc")
    assert echoed == "none" and kept == 0

    # a plain httpx client would have sent it: the host and the check are sound
    async def plain() -> str:
        async with httpx.AsyncClient() as client:
            await client.get(f"{cookie_host}/set")
            return (await client.get(f"{cookie_host}/echo")).text

    assert anyio.run(plain) == "session=abc"


@pytest.mark.timeout(20)
def test_a_cookie_a_file_host_sets_is_never_sent_back(cookie_host: str, tmp_path: Path) -> None:
    _CookieHost.cookies_seen = []

    async def main() -> None:
        async with file_client(timeout=10) as client:
            for n, path in enumerate(["/img/set", "/img/echo"]):
                await download(client, cookie_host + path, tmp_path, lambda e, n=n: f"{n}.{e}", "t")

    anyio.run(main)
    assert _CookieHost.cookies_seen == ["none", "none"]
    assert (tmp_path / "1.png").read_bytes() == PNG


def test_the_cookie_jar_cannot_be_replaced() -> None:
    client = CookielessClient()
    with pytest.raises(TypeError):
        client.cookies = {"session": "abc"}


@pytest.mark.timeout(20)
@pytest.mark.skipif(sys.platform == "win32", reason="uvloop is not installed on Windows")
def test_commands_run_on_uvloop() -> None:
    async def loop_module() -> str:
        return type(asyncio.get_running_loop()).__module__

    assert _run_async(loop_module).startswith("uvloop")


@pytest.mark.timeout(60)
def test_a_command_sets_what_it_holds_aside_from_the_garbage_collector() -> None:
    # In a process of its own: freezing the heap and the thresholds are the process's.
    script = (
        "import gc\n"
        "from runner.cli import _run_async\n"
        "before = gc.get_freeze_count()\n"
        "async def noop(): return None\n"
        "_run_async(noop); frozen = gc.get_freeze_count(); _run_async(noop)\n"
        "print(before, frozen > 1000, gc.get_freeze_count() == frozen, gc.get_threshold())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=50, check=True
    )
    # frozen once, at the first event loop, and the young generation collected less often
    assert done.stdout.strip().split(maxsplit=3) == ["0", "True", "True", "(10000, 20, 20)"]
