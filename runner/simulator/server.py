"""Running the simulator over real sockets: `serve` inside an anyio task (the CLI uses it) and
`running_in_thread` for synchronous code such as tests, which gets its own thread and event loop.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import anyio
import anyio.abc
import uvicorn
from anyio.from_thread import start_blocking_portal

from runner.simulator.app import create_app
from runner.simulator.config import SimConfig
from runner.simulator.state import Simulator
from runner.simulator.webhooks import deliver
from runner.sockets import bind_tcp, url_of, uvicorn_running

_STOP_TIMEOUT = 10.0


class _HideDroppedResponses(logging.Filter):
    """Hides uvicorn's complaints about the answers the simulator cuts short on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "without completing response" not in message and (
            "without starting response" not in message
        )


async def serve(
    sim: Simulator,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the simulator until cancelled; reports its base URL through `task_status`.

    The socket is bound here so that port 0 gives a free port whose number is known before
    anyone connects. Beside the server runs the webhook sender, stopped with it.
    """
    sock = bind_tcp(host, port)
    app = create_app(sim)
    config = uvicorn.Config(
        app,
        log_level="warning",
        lifespan="off",
        # no websockets here; loading the websocket stack only brings deprecation warnings
        ws="none",
        # the app sets Date itself, on the provider's clock (`clock_offset`)
        date_header=False,
        # a last resort: held `Prefer: wait` requests already end when `stopping` is set
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    log_filter = _HideDroppedResponses()
    error_log = logging.getLogger("uvicorn.error")
    error_log.addFilter(log_filter)
    senders = anyio.CancelScope()

    async def send_webhooks(url: str) -> None:
        with senders:
            await deliver(sim, url)

    try:
        async with (
            uvicorn_running(server, sock, "the simulator's HTTP server") as stopped,
            anyio.create_task_group() as tg,
        ):
            url = url_of(sock)
            tg.start_soon(send_webhooks, url)
            try:
                task_status.started(url)
                await stopped.wait()
            finally:
                senders.cancel()
                app.state.stopping = True  # held `Prefer: wait` requests end; then it exits
    finally:
        error_log.removeFilter(log_filter)


@dataclass(frozen=True)
class SimHandle:
    """A running simulator: where it listens, and its state for inspection."""

    url: str
    sim: Simulator


@contextlib.contextmanager
def running_in_thread(
    sim: Simulator | None = None, config: SimConfig | None = None
) -> Iterator[SimHandle]:
    """Run the simulator in a background thread with its own event loop, until the block ends."""
    if sim is not None and config is not None:
        raise ValueError("pass a Simulator or a SimConfig, not both")
    simulator = sim if sim is not None else Simulator(config)
    with start_blocking_portal() as portal:
        future, url = portal.start_task(serve, simulator, name="provider simulator")
        try:
            yield SimHandle(url=url, sim=simulator)
        finally:
            future.cancel()
            with contextlib.suppress(concurrent.futures.CancelledError):
                future.result(timeout=_STOP_TIMEOUT)
