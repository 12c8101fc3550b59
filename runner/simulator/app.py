"""The simulator's ASGI application: every simulated API on one Starlette app, plus the file
host and the `/_sim` control routes that tests and benchmarks use to steer and observe it.
"""

from __future__ import annotations

import contextlib
import re

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runner.simulator._http import (
    CUT_OFF,
    CountedFileResponse,
    DripResponse,
    TruncatedResponse,
    has_credentials,
    http_date,
    inject,
    read_json,
    sim_of,
)
from runner.simulator.bfl_api import BflApi
from runner.simulator.echo import EchoKey
from runner.simulator.images import FORMATS, content_type
from runner.simulator.replicate_api import ReplicateApi
from runner.simulator.state import Simulator

_FILE_NAME_RE = re.compile(r"^(\d+)\.([a-z]+)$")

# what Azure blob storage, behind BFL's delivery URLs, answers once a signed URL has expired
_EXPIRED_XML = (
    '<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthenticationFailed</Code>'
    "<Message>Signed expiry time has passed.</Message></Error>"
)


# what a CDN or captive portal puts where an image was expected
_NOT_AN_IMAGE = (
    "<!DOCTYPE html><html><head><title>503 Service Temporarily Unavailable</title></head>"
    "<body><h1>Service Temporarily Unavailable</h1><p>Please try again later.</p></body></html>"
)


async def get_file(request: Request) -> Response:
    """Serve one output image. No auth: a key sent here is counted, since it would leak."""
    sim = sim_of(request)
    sim.note_download(with_auth=has_credentials(request))
    prediction = sim.find(request.path_params["prediction_id"])
    fault = await inject(
        request,
        style=None,
        route="download",
        prompt=None if prediction is None else prediction.prompt,
    )
    if isinstance(fault, Response):
        return fault
    not_found = Response("Not found\n", 404, media_type="text/plain")
    forbidden = Response(_EXPIRED_XML, 403, media_type="application/xml")
    match = _FILE_NAME_RE.match(request.path_params["name"])
    if match is None or prediction is None:
        return not_found
    index, ext = int(match[1]), match[2]
    expires_text = request.query_params.get("exp", "")
    signature = request.query_params.get("sig", "")
    if not expires_text.isdigit() or not sim.signature_ok(
        prediction.id, index, ext, int(expires_text), signature
    ):
        return forbidden
    if ext not in FORMATS or ext != prediction.ext or index >= prediction.num_outputs:
        return not_found
    now = sim.now()
    snap = sim.snapshot(prediction, now)
    if snap.phase != "succeeded":
        return not_found
    if prediction.style == "replicate":
        # Replicate deletes the files with the prediction's data: they are gone, not forbidden
        if sim.data_removed(prediction, snap, now):
            return not_found
    elif sim.provider_time(now) > int(expires_text):
        # signed and checked on the one clock, so an offset alone never expires a URL
        return forbidden
    if fault.kind == "gone":
        if fault.status == 403:
            return forbidden
        return Response("Gone\n" if fault.status == 410 else "Not found\n", fault.status)
    if fault.kind == "not_image":
        return Response(_NOT_AN_IMAGE, 200, media_type="text/html")
    # drawing takes a few milliseconds: keep it off the event loop serving everyone else
    body = await anyio.to_thread.run_sync(sim.image_bytes, prediction, index)
    sim.note_file(request.url.path, body)
    media_type = "text/html" if fault.kind == "wrong_type" else content_type(ext)
    if fault.kind == "truncate":
        return TruncatedResponse(body, media_type)

    def served() -> None:
        # whatever its Content-Type said: the bytes were all there
        sim.note_served(prediction, index)

    if fault.drip_seconds > 0:
        return DripResponse(body, media_type, fault.drip_seconds, served)
    return CountedFileResponse(body, media_type, served)


async def stats(request: Request) -> Response:
    return JSONResponse(sim_of(request).stats())


async def get_config(request: Request) -> Response:
    return JSONResponse(sim_of(request).config.to_dict())


async def update_config(request: Request) -> Response:
    ok, body = await read_json(request)
    if not ok:
        return JSONResponse({"error": "the body must be a JSON object"}, status_code=400)
    try:
        config = sim_of(request).update_config(body)
    except (TypeError, ValueError) as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    return JSONResponse(config.to_dict())


async def reset(request: Request) -> Response:
    sim_of(request).reset()
    return JSONResponse({"ok": True})


class _CountStatuses:
    """Counts the status of every API answer the client fully received.

    A response is counted when its last body chunk goes out, so an answer cut on purpose
    (a dropped create) is not counted as something the client saw.
    """

    def __init__(self, app: ASGIApp, sim: Simulator) -> None:
        self.app = app
        self.sim = sim

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_sim"):
            await self.app(scope, receive, send)
            return
        status = 0

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                self.sim.note_status(status)
            await send(message)

        with contextlib.suppress(ClientDisconnect):
            # A client that hung up mid-request (a killed runner) is business as usual here.
            await self.app(scope, receive, counting_send)


class _DateHeader:
    """Gives every answer a `Date` header on the provider's clock, as an origin server with a
    clock must (RFC 7231); the answers cut off on purpose get none. Uvicorn's own is turned off
    (`server.py`), so over a socket and in process (httpx.ASGITransport) the header is this."""

    def __init__(self, app: ASGIApp, sim: Simulator) -> None:
        self.app = app
        self.sim = sim

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def dated_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not message.pop(CUT_OFF, False):
                date = http_date(self.sim.provider_time(self.sim.now()))
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"date"]
                message = {**message, "headers": [*headers, (b"date", date.encode())]}
            await send(message)

        await self.app(scope, receive, dated_send)


def create_app(sim: Simulator) -> Starlette:
    """All simulated APIs on one app; `app.state.sim` is the simulator behind them."""
    routes: list[Route] = [
        Route("/_sim/stats", stats, methods=["GET"]),
        Route("/_sim/config", get_config, methods=["GET"]),
        Route("/_sim/config", update_config, methods=["POST"]),
        Route("/_sim/reset", reset, methods=["POST"]),
        Route("/files/{prediction_id}/{name}", get_file, methods=["GET"]),
    ]
    # Replicate's routes come before BFL's so `POST /v1/predictions` is not read as a BFL model;
    # the aggregators' prefixed routes come before BFL's region route `/{region}/v1/get_result`.
    routes += ReplicateApi("", aggregator=False).routes()
    routes += ReplicateApi("/replicate", aggregator=True).routes()
    routes += BflApi("/flux", aggregator=True).routes()
    routes += BflApi("", aggregator=False).routes()
    app = Starlette(routes=routes)
    app.state.sim = sim
    # set by the server when it shuts down, so requests held by `Prefer: wait` answer at once
    app.state.stopping = False
    # innermost: it sees the answers cut off on purpose before `_DateHeader` unmarks them
    app.add_middleware(EchoKey, sim=sim)
    app.add_middleware(_CountStatuses, sim=sim)
    app.add_middleware(_DateHeader, sim=sim)
    return app
