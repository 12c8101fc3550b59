"""Listening sockets for the servers runner starts (the simulator, the webhook receiver)."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    import uvicorn


def bind_tcp(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """A listening TCP socket on HOST:PORT (port 0 picks a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP spelled out: asyncio turns Nagle off only on sockets that say they are TCP,
    # and with Nagle on every answer after the first on a connection waits ~40 ms for an ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket) -> str:
    """`http://host:port` of a bound socket (IPv6 hosts in brackets)."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"


@asynccontextmanager
async def uvicorn_running(
    server: uvicorn.Server, sock: socket.socket, what: str
) -> AsyncIterator[anyio.Event]:
    """Run `server` on `sock` beside the block, which begins once it accepts connections and
    gets an event set when the server stops. When the block ends, or is cancelled, the server
    is asked to exit and allowed to finish closing its connections (shielded) instead of being
    torn down mid-shutdown. The socket is closed at the end. `what` names it in errors."""
    stopped = anyio.Event()

    async def run() -> None:
        try:
            with anyio.CancelScope(shield=True):
                await server.serve(sockets=[sock])
        finally:
            stopped.set()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            try:
                while not server.started:
                    if stopped.is_set():
                        raise RuntimeError(f"{what} stopped while starting")
                    await anyio.sleep(0.005)
                yield stopped
            finally:
                server.should_exit = True
    finally:
        sock.close()
