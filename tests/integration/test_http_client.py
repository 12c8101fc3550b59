"""The HTTP clients the worker talks through: no cookies kept, and the event loop they run on."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anyio
import httpx
import pytest

from runner.cli import _run_async
from runner.providers.factory import CookielessClient, fast_transport
from runner.worker.download import file_client


class _CookieHost(BaseHTTPRequestHandler):
    """/set answers with a Set-Cookie; any other path echoes the Cookie header it got."""

    def do_GET(self) -> None:
        body = (self.headers.get("Cookie") or "none").encode()
        self.send_response(200)
        if self.path == "/set":
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
@pytest.mark.parametrize("kind", ["api", "files"])
def test_a_cookie_one_host_sets_is_never_sent_back(cookie_host: str, kind: str) -> None:
    async def main() -> tuple[str, str, int]:
        client = CookielessClient(transport=fast_transport(4)) if kind == "api" else file_client()
        async with client:
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
