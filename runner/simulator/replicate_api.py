"""The Replicate-style API: create, get, cancel and list predictions, and the account's webhook
signing secret, at the root (Replicate itself) and under `/replicate` (DeerAPI and CometAPI,
which copy Replicate's upstream URLs into their answers, and serve only create and get unless
`aggregator_routes` says otherwise: see `aggregator.py`). The webhooks themselves are sent by
`webhooks.py`.
"""

from __future__ import annotations

import base64
import re
import time
from typing import Any, Literal

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runner.simulator import padding
from runner.simulator._http import (
    Admitted,
    DroppedResponse,
    ResetResponse,
    admit,
    authorize,
    base_url,
    inject,
    injected_error,
    iso,
    json_type,
    parse_iso,
    problem,
    read_json,
    replicate_invalid,
    sim_of,
    stall,
)
from runner.simulator.aggregator import UndocumentedRoute, fallback
from runner.simulator.images import requested_size
from runner.simulator.state import Prediction, Refused, Simulator, Snapshot

UPSTREAM = "https://api.replicate.com/v1"

_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_VERSION_RE = re.compile(rf"^({_NAME})/({_NAME})(?::([0-9a-f]{{64}}))?$")
_HEX_RE = re.compile(r"^[0-9a-f]{64}$")
_DURATION_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")
_WEBHOOK_EVENTS = ("start", "output", "logs", "completed")
_OUTPUT_FORMATS = ("webp", "jpg", "png")
_MIN_CANCEL_AFTER = 5.0
_MAX_WAIT = 60

NSFW_ERROR = "NSFW content detected. Try running it again, or try a different prompt."
FAILURE_ERROR = "Prediction failed: the model raised an error while generating (simulated)."

_PUBLIC_STATUS = {
    "queued": "starting",
    "running": "processing",
    "succeeded": "succeeded",
    "failed": "failed",
    "moderated": "failed",
    "request_moderated": "failed",
    "canceled": "canceled",
    "aborted": "aborted",
}


def _field(kind: str, name: str, description: str) -> dict[str, str]:
    return {"type": kind, "field": name, "description": description}


def _type_error(name: str, expected: str, value: Any) -> dict[str, str]:
    return _field(
        "invalid_type", name, f"Invalid type. Expected: {expected}, given: {json_type(value)}"
    )


def parse_prefer(header: str | None) -> int | None:
    """Seconds to wait from `Prefer: wait[=N]`; None without a wait preference."""
    if header is None:
        return None
    for part in header.split(","):
        token = part.strip()
        if token == "wait":
            return _MAX_WAIT
        if token.startswith("wait="):
            value = token.removeprefix("wait=")
            if not value.isdigit() or not 1 <= int(value) <= _MAX_WAIT:
                raise ValueError(f"wait must be a whole number of seconds from 1 to {_MAX_WAIT}")
            return int(value)
    return None


def parse_cancel_after(header: str | None) -> float | None:
    """Seconds from `Cancel-After: 30s | 5m | 1h30m | 90`; raises ValueError when invalid."""
    if header is None:
        return None
    text = header.strip()
    try:
        seconds = float(text)
    except ValueError:
        match = _DURATION_RE.match(text)
        if not text or match is None:
            raise ValueError(
                f"cannot read {header!r} as a duration like 30s, 5m or 1h30m"
            ) from None
        hours, minutes, secs = (float(g) if g else 0.0 for g in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    if seconds < _MIN_CANCEL_AFTER:
        raise ValueError(f"the minimum is {_MIN_CANCEL_AFTER:g} seconds")
    return seconds


def _check_body(
    body: Any, *, allowed: tuple[str, ...], required: tuple[str, ...]
) -> list[dict[str, str]]:
    if not isinstance(body, dict):
        return [_type_error("(root)", "object", body)]
    problems = [
        _field("required", "(root)", f"{name} is required") for name in required if name not in body
    ]
    problems += [
        _field(
            "additional_property_not_allowed",
            "(root)",
            f"Additional property {name} is not allowed",
        )
        for name in body
        if name not in allowed
    ]
    if "input" in body and not isinstance(body["input"], dict):
        problems.append(_type_error("input", "object", body["input"]))
    if "version" in body and not isinstance(body["version"], str):
        problems.append(_type_error("version", "string", body["version"]))
    if "webhook" in body and not isinstance(body["webhook"], str):
        problems.append(_type_error("webhook", "string", body["webhook"]))
    events = body.get("webhook_events_filter")
    if events is not None:
        if not isinstance(events, list):
            problems.append(_type_error("webhook_events_filter", "array", events))
        else:
            allowed_events = ", ".join(f'"{e}"' for e in _WEBHOOK_EVENTS)
            problems += [
                _field(
                    "enum",
                    f"webhook_events_filter.{i}",
                    f"webhook_events_filter.{i} must be one of the following: {allowed_events}",
                )
                for i, event in enumerate(events)
                if event not in _WEBHOOK_EVENTS
            ]
    return problems


def _check_input(inputs: dict[str, Any]) -> list[dict[str, str]]:
    problems = []
    if "prompt" in inputs and not isinstance(inputs["prompt"], str):
        problems.append(_type_error("input.prompt", "string", inputs["prompt"]))
    for name in ("seed", "width", "height", "num_outputs"):
        value = inputs.get(name)
        if name in inputs and (not isinstance(value, int) or isinstance(value, bool)):
            problems.append(_type_error(f"input.{name}", "integer", value))
    outputs = inputs.get("num_outputs", 1)
    if isinstance(outputs, int) and not isinstance(outputs, bool):
        if outputs < 1:
            problems.append(
                _field("number_gte", "input.num_outputs", "Must be greater than or equal to 1")
            )
        elif outputs > 4:
            problems.append(
                _field("number_lte", "input.num_outputs", "Must be less than or equal to 4")
            )
    if "output_format" in inputs and inputs["output_format"] not in _OUTPUT_FORMATS:
        allowed = ", ".join(f'"{f}"' for f in _OUTPUT_FORMATS)
        problems.append(
            _field(
                "enum",
                "input.output_format",
                f"input.output_format must be one of the following: {allowed}",
            )
        )
    return problems


# -- rendering ------------------------------------------------------------------------------


def file_urls(sim: Simulator, prediction: Prediction, snap: Snapshot, base: str) -> list[str]:
    expires = sim.file_expiry(prediction, snap)
    urls = []
    for index in range(prediction.num_outputs):
        signature = sim.sign(prediction.id, index, prediction.ext, expires)
        urls.append(
            f"{base}/files/{prediction.id}/{index}.{prediction.ext}?exp={expires}&sig={signature}"
        )
    return urls


def render(
    sim: Simulator, prediction: Prediction, request: Request, at: float | None = None
) -> dict[str, Any]:
    """The prediction object exactly as the API shows it now (or at the instant `at`)."""
    return render_at(sim, prediction, base_url(request), at)


def render_at(
    sim: Simulator, prediction: Prediction, base: str, at: float | None = None
) -> dict[str, Any]:
    """`render` for a server reached at `base` (a webhook's body is built outside a request)."""
    now = sim.now() if at is None else at
    snap = sim.snapshot(prediction, now)
    removed = snap.terminal and sim.data_removed(prediction, snap, now)
    if prediction.aggregator:
        # the aggregators copy Replicate's own URLs, which do not accept their keys
        api = f"{UPSTREAM}/predictions/{prediction.id}"
    else:
        api = f"{base}/v1/predictions/{prediction.id}"
    oversize = sim.config.oversized
    output: Any = None
    if snap.phase == "succeeded" and not removed:
        urls = padding.outputs(oversize, prediction, file_urls(sim, prediction, snap, base))
        many = len(urls) > 1 or not prediction.single_output
        output = urls if many else urls[0]
    error = None
    if snap.phase in ("moderated", "request_moderated"):
        error = NSFW_ERROR
    elif snap.phase == "failed":
        error = padding.error(oversize, prediction, FAILURE_ERROR)
    logs = ""
    if snap.started is not None and not removed:
        logs = f"Using seed: {prediction.seed}\nRunning prediction...\n"
        if snap.phase == "succeeded":
            logs += f"Generated {prediction.num_outputs} image(s) in {prediction.duration:.2f}s\n"
        elif error is not None:
            logs += f"{error}\n"
    body: dict[str, Any] = {
        "id": padding.shown_id(oversize, prediction),
        "model": prediction.model,
        "version": prediction.version,
        # removed with the rest: an old prediction cannot be matched by its input
        "input": {} if removed else prediction.input,
        "logs": logs,
        "output": output,
        "data_removed": bool(removed),
        "error": error,
        "source": "api",
        "status": _PUBLIC_STATUS[snap.phase],
        "created_at": iso(sim.provider_time(prediction.created)),
        "urls": {
            "cancel": f"{api}/cancel",
            "get": api,
            "stream": f"https://stream.replicate.com/v1/files/{prediction.id}",
            "web": f"https://replicate.com/p/{prediction.id}",
        },
    }
    # absent rather than null until they happen, as in Replicate's answers
    if snap.started is not None:
        body["started_at"] = iso(sim.provider_time(snap.started))
    if snap.completed is not None:
        body["completed_at"] = iso(sim.provider_time(snap.completed))
    if prediction.deadline is not None:
        # set at create, as the provider's clock read then plus Cancel-After
        shown = sim.provider_time(prediction.created) + prediction.deadline - prediction.created
        body["deadline"] = iso(shown)
    if snap.terminal and snap.completed is not None:
        predict_time = 0.0 if snap.started is None else snap.completed - snap.started
        body["metrics"] = {
            "predict_time": round(predict_time, 6),
            "total_time": round(snap.completed - prediction.created, 6),
        }
    return body


# -- handlers -------------------------------------------------------------------------------


class ReplicateApi:
    """Handlers for one mount point of the Replicate-style API."""

    def __init__(self, prefix: str, *, aggregator: bool) -> None:
        self.prefix = prefix
        self.aggregator = aggregator
        self.namespace = "aggregator/replicate" if aggregator else "replicate"

    def routes(self) -> list[Route]:
        p = self.prefix
        documented = [
            Route(
                f"{p}/v1/models/{{owner}}/{{name}}/predictions",
                self.create_for_model,
                methods=["POST"],
            ),
            Route(f"{p}/v1/predictions", self.create_for_version, methods=["POST"]),
            Route(f"{p}/v1/predictions/{{prediction_id}}", self.get, methods=["GET"]),
        ]
        others = [
            ("list", f"{p}/v1/predictions", self.list_predictions, "GET"),
            ("cancel", f"{p}/v1/predictions/{{prediction_id}}/cancel", self.cancel, "POST"),
            ("webhook_secret", f"{p}/v1/webhooks/default/secret", self.webhook_secret, "GET"),
            ("account", f"{p}/v1/account", self.account, "GET"),
        ]
        if not self.aggregator:
            return documented + [
                Route(path, endpoint, methods=[method]) for _, path, endpoint, method in others
            ]
        routes = documented + [
            UndocumentedRoute(name, path, endpoint, methods=[method])
            for name, path, endpoint, method in others
        ]
        return [*routes, fallback(p, routes)]

    async def _admit(self, request: Request, route: str) -> Admitted | Response:
        bucket: Literal["create", "read"] = "create" if route == "create" else "read"
        return await admit(request, style="replicate", auth="bearer", route=route, bucket=bucket)

    async def _admit_create(self, request: Request) -> tuple[Admitted, Any] | Response:
        """Auth and rate limit, the body, then the faults (which may depend on its prompt)."""
        key = await authorize(request, style="replicate", auth="bearer", bucket="create")
        if isinstance(key, Response):
            return key
        ok, body = await read_json(request)
        inputs = body.get("input") if ok and isinstance(body, dict) else None
        prompt = inputs.get("prompt") if isinstance(inputs, dict) else None
        fault = await inject(
            request,
            style="replicate",
            route="create",
            prompt=prompt if isinstance(prompt, str) else None,
        )
        if isinstance(fault, Response):
            return fault
        if not ok:
            return problem(400, "Invalid JSON", "The request body is not valid JSON.")
        return Admitted(key, fault), body

    async def _admit_about(
        self, request: Request, route: str
    ) -> tuple[Admitted, Prediction | None] | Response:
        """Auth, rate limit, the prediction asked about, then the faults for its prompt."""
        key = await authorize(request, style="replicate", auth="bearer", bucket="read")
        if isinstance(key, Response):
            return key
        sim = sim_of(request)
        prediction = sim.get(self.namespace, key, request.path_params["prediction_id"])
        prompt = None if prediction is None else prediction.prompt
        fault = await inject(request, style="replicate", route=route, prompt=prompt)
        if isinstance(fault, Response):
            return fault
        return Admitted(key, fault), prediction

    async def create_for_model(self, request: Request) -> Response:
        admission = await self._admit_create(request)
        if isinstance(admission, Response):
            return admission
        admitted, body = admission
        problems = _check_body(
            body,
            allowed=("input", "webhook", "webhook_events_filter", "stream"),
            required=("input",),
        )
        model = f"{request.path_params['owner']}/{request.path_params['name']}"
        route = f"{self.prefix}/v1/models/{{owner}}/{{name}}/predictions"
        return await self._create(request, admitted, body, problems, route, model, "hidden")

    async def create_for_version(self, request: Request) -> Response:
        admission = await self._admit_create(request)
        if isinstance(admission, Response):
            return admission
        admitted, body = admission
        problems = _check_body(
            body,
            allowed=("version", "input", "webhook", "webhook_events_filter", "stream"),
            required=("version", "input"),
        )
        model, version = "", ""
        if not problems:
            ref = body["version"]
            if _HEX_RE.match(ref):
                # a bare version id does not say which model it belongs to
                model, version = "unknown/unknown", ref
            elif match := _VERSION_RE.match(ref):
                model = f"{match[1]}/{match[2]}"
                version = match[3] or "hidden"
            else:
                problems.append(
                    _field(
                        "invalid_version",
                        "version",
                        "Invalid version: use owner/name, owner/name:<64 hex> or a 64 hex id",
                    )
                )
        route = f"{self.prefix}/v1/predictions"
        return await self._create(request, admitted, body, problems, route, model, version)

    async def _create(
        self,
        request: Request,
        admitted: Admitted,
        body: Any,
        problems: list[dict[str, str]],
        route: str,
        model: str,
        version: str,
    ) -> Response:
        sim = sim_of(request)
        if not problems:
            problems = _check_input(body["input"])
        try:
            wait = parse_prefer(request.headers.get("prefer"))
        except ValueError as exc:
            problems.append(_field("invalid_header", "Prefer", str(exc)))
        try:
            cancel_after = parse_cancel_after(request.headers.get("cancel-after"))
        except ValueError as exc:
            problems.append(_field("invalid_header", "Cancel-After", str(exc)))
        if problems:
            return replicate_invalid(problems)
        config = sim.config
        if model in config.unknown_models:
            return problem(
                404, "Model not found", f"The model {model} does not exist or is not available."
            )
        inputs: dict[str, Any] = body["input"]
        single_output = model in config.single_output_models
        num_outputs = 1 if single_output else int(inputs.get("num_outputs", 1))
        created = sim.create(
            style="replicate",
            namespace=self.namespace,
            aggregator=self.aggregator,
            key=admitted.key,
            route=route,
            model=model,
            version=version,
            inputs=inputs,
            size=requested_size(inputs),
            ext=str(inputs.get("output_format", "webp")),
            num_outputs=num_outputs,
            single_output=single_output,
            cost=config.replicate_cost * num_outputs,
            cancel_after=cancel_after,
            webhook=body.get("webhook"),
            webhook_events_filter=body.get("webhook_events_filter"),
        )
        if isinstance(created, Refused):
            return problem(
                402,
                "Insufficient credit",
                "You have insufficient credit to run this model. Go to "
                "https://replicate.com/account/billing#billing to purchase credit. Once you "
                "purchase credit, please wait a few minutes before trying again.",
            )
        fault = admitted.fault
        if fault.drop_after_create:
            sim.note_dropped()
            return DroppedResponse(render(sim, created, request, at=created.created), 201)
        if fault.kind == "reset_after_create":
            sim.note_dropped()
            return ResetResponse()
        if fault.error_after_create is not None:
            return injected_error(sim, "replicate", fault.error_after_create, fault.retry_after)
        if fault.after_seconds > 0 and not await stall(request, fault.after_seconds):
            return ResetResponse()  # the client gave up; it was created all the same
        if wait is None:
            # the answer describes the prediction as it was accepted, as Replicate's does
            answer = render(sim, created, request, at=created.created)
        else:
            await _wait_until_done(request, created, wait)
            answer = render(sim, created, request)
        terminal = answer["status"] in ("succeeded", "failed", "canceled", "aborted")
        # 202 only tells a waiting client that its wait ran out before the prediction finished
        status = 202 if wait is not None and not terminal else 201
        return JSONResponse(answer, status_code=status)

    async def get(self, request: Request) -> Response:
        admission = await self._admit_about(request, "get")
        if isinstance(admission, Response):
            return admission
        admitted, prediction = admission
        sim = sim_of(request)
        sim.note_poll()
        if prediction is None or admitted.fault.kind == "not_found":
            return problem(404, "Not found", "The requested prediction does not exist.")
        return JSONResponse(render(sim, prediction, request))

    async def cancel(self, request: Request) -> Response:
        admission = await self._admit_about(request, "cancel")
        if isinstance(admission, Response):
            return admission
        _, prediction = admission
        sim = sim_of(request)
        if prediction is None:
            return problem(404, "Not found", "The requested prediction does not exist.")
        sim.cancel(prediction)
        return JSONResponse(render(sim, prediction, request))

    async def account(self, request: Request) -> Response:
        """The caller's account (`GET /v1/account`), which clients check a token with."""
        admitted = await self._admit(request, "get")
        if isinstance(admitted, Response):
            return admitted
        return JSONResponse({"type": "user", "username": "simulated", "name": "Simulated"})

    async def webhook_secret(self, request: Request) -> Response:
        """The signing secret of the caller's account: `{"key": "whsec_..."}`."""
        admitted = await self._admit(request, "get")
        if isinstance(admitted, Response):
            return admitted
        return JSONResponse({"key": sim_of(request).webhook_secret(admitted.key)})

    async def list_predictions(self, request: Request) -> Response:
        admitted = await self._admit(request, "list")
        if isinstance(admitted, Response):
            return admitted
        sim = sim_of(request)
        sim.note_list()
        params = request.query_params
        bounds: dict[str, float | None] = {}
        problems = []
        for name in ("created_after", "created_before"):
            value = params.get(name)
            try:
                bounds[name] = None if value is None else parse_iso(value)
            except ValueError:
                problems.append(_field("format", name, f"{name} must be an ISO 8601 date-time"))
        older_than = newer_than = None
        cursor = params.get("cursor")
        if cursor is not None:
            decoded = _decode_cursor(cursor)
            if decoded is None:
                problems.append(_field("format", "cursor", "Invalid cursor"))
            else:
                direction, seq = decoded
                if direction == "older":
                    older_than = seq
                else:
                    newer_than = seq
        if problems:
            return replicate_invalid(problems)
        shows = sim.config.aggregator_list if self.aggregator else "real"
        if shows == "empty":
            return JSONResponse({"next": None, "previous": None, "results": []})
        page, has_newer, has_older = sim.list_page(
            self.namespace,
            admitted.key,
            created_after=bounds["created_after"],
            created_before=bounds["created_before"],
            older_than=older_than,
            newer_than=newer_than,
            # what the aggregator's own upstream account holds, its other customers' included
            others=shows == "foreign",
        )
        here = f"{base_url(request)}{self.prefix}/v1/predictions"
        kept = {k: v for k, v in params.items() if k in ("created_after", "created_before")}

        def link(direction: str, seq: int) -> str:
            query = "&".join(f"{k}={v}" for k, v in kept.items())
            cursor_part = f"cursor={_encode_cursor(direction, seq)}"
            return f"{here}?{cursor_part}&{query}" if query else f"{here}?{cursor_part}"

        return JSONResponse(
            {
                "next": link("older", page[-1].seq) if has_older else None,
                "previous": link("newer", page[0].seq) if has_newer else None,
                "results": [render(sim, p, request) for p in page],
            }
        )


def _encode_cursor(direction: str, seq: int) -> str:
    return base64.urlsafe_b64encode(f"{direction}:{seq}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[str, int] | None:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        direction, _, seq = base64.urlsafe_b64decode(padded).decode().partition(":")
        if direction in ("older", "newer") and seq.isdigit():
            return direction, int(seq)
    except (ValueError, UnicodeDecodeError):
        pass
    return None


async def _wait_until_done(request: Request, prediction: Prediction, seconds: float) -> None:
    """Hold the answer until the prediction is terminal, `seconds` of real time passed, or the
    server is stopping (a held request must not keep it from shutting down)."""
    sim = sim_of(request)
    give_up = time.monotonic() + seconds
    while not sim.snapshot(prediction).terminal and not request.app.state.stopping:
        left = give_up - time.monotonic()
        if left <= 0:
            return
        until_done = prediction.terminal_at() - sim.now()
        # short naps catch a cancel from another request, or a test moving a fake clock
        await anyio.sleep(max(0.005, min(left, until_done, 0.25)))
