"""The Black Forest Labs-style API: `POST /v1/{model}` and `get_result` polling, at the root
(BFL itself, `x-key` auth, polling through a region host) and under `/flux` (DeerAPI, Bearer
auth, whose answers carry BFL's upstream polling URL, and which serves `/v1/credits` only when
`aggregator_routes` says so).
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

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
    bfl_error,
    inject,
    injected_error,
    read_json,
    sim_of,
    stall,
    throttled,
)
from runner.simulator.aggregator import UndocumentedRoute, fallback
from runner.simulator.images import requested_size
from runner.simulator.replicate_api import file_urls
from runner.simulator.state import Prediction, Refused, Simulator

# models whose width and height are free numbers: multiples of 32 from 256 to 1440
_SIZED_32 = frozenset(
    {"flux-pro-1.1", "flux-pro", "flux-dev", "flux-pro-1.0-canny", "flux-pro-1.0-depth"}
)
_NEEDS_IMAGE = frozenset({"flux-pro-1.0-fill", "flux-pro-1.0-expand"})
_NEEDS_CONTROL_IMAGE = frozenset({"flux-pro-1.0-canny", "flux-pro-1.0-depth"})
_OUTPUT_FORMATS = ("jpeg", "png", "webp")

_PUBLIC_STATUS = {
    "queued": "Pending",
    "running": "Pending",
    "succeeded": "Ready",
    "failed": "Error",
    "moderated": "Content Moderated",
    "request_moderated": "Request Moderated",
    # BFL has no cancel; a deadline cannot be set there either
    "canceled": "Error",
    "aborted": "Error",
}

IN_FLIGHT_DETAIL = (
    "You have exceeded the number of allowed concurrent tasks ({limit}). "
    "Wait for some of them to finish before submitting more."
)


def _is_flux2(model: str) -> bool:
    return model.startswith("flux-2-")


def _needs_prompt(model: str) -> bool:
    return _is_flux2(model) or model.startswith("flux-kontext-") or model in _NEEDS_CONTROL_IMAGE


def _error(field: str, msg: str, kind: str, value: Any = None) -> dict[str, Any]:
    # the shape pydantic gives FastAPI, which BFL runs on
    return {"loc": ["body", field], "msg": msg, "type": kind, "input": value}


def _int_field(
    body: dict[str, Any],
    name: str,
    *,
    low: int | None = None,
    high: int | None = None,
    multiple: int | None = None,
) -> list[dict[str, Any]]:
    if name not in body or body[name] is None:
        return []
    value = body[name]
    if not isinstance(value, int) or isinstance(value, bool):
        return [_error(name, "Input should be a valid integer", "int_type", value)]
    if low is not None and value < low:
        return [
            _error(
                name, f"Input should be greater than or equal to {low}", "greater_than_equal", value
            )
        ]
    if high is not None and value > high:
        return [
            _error(name, f"Input should be less than or equal to {high}", "less_than_equal", value)
        ]
    if multiple is not None and value % multiple:
        return [_error(name, f"Input should be a multiple of {multiple}", "multiple_of", value)]
    return []


def validate(model: str, body: Any) -> list[dict[str, Any]]:
    """Validation errors in FastAPI's `detail` list shape; empty when the input is accepted."""
    if not isinstance(body, dict):
        return [
            {
                "loc": ["body"],
                "msg": "Input should be a valid dictionary or object to extract fields from",
                "type": "model_attributes_type",
                "input": body,
            }
        ]
    errors: list[dict[str, Any]] = []
    prompt = body.get("prompt")
    if _needs_prompt(model) and "prompt" not in body:
        errors.append(_error("prompt", "Field required", "missing", body))
    elif prompt is not None and not isinstance(prompt, str):
        errors.append(_error("prompt", "Input should be a valid string", "string_type", prompt))
    for name, needed in (("image", _NEEDS_IMAGE), ("control_image", _NEEDS_CONTROL_IMAGE)):
        if model in needed:
            if name not in body:
                errors.append(_error(name, "Field required", "missing", body))
            elif not isinstance(body[name], str):
                errors.append(
                    _error(name, "Input should be a valid string", "string_type", body[name])
                )
    if model in _SIZED_32:
        for name in ("width", "height"):
            errors += _int_field(body, name, low=256, high=1440, multiple=32)
    elif _is_flux2(model):
        for name in ("width", "height"):
            if body.get(name) != 0:
                errors += _int_field(body, name, low=64)
    errors += _int_field(body, "seed")
    errors += _int_field(body, "safety_tolerance", low=0, high=5 if _is_flux2(model) else 6)
    output_format = body.get("output_format")
    if output_format is not None and output_format not in _OUTPUT_FORMATS:
        errors.append(
            _error(
                "output_format", "Input should be 'jpeg', 'png' or 'webp'", "enum", output_format
            )
        )
    for name in ("aspect_ratio", "webhook_url", "webhook_secret", "input_image"):
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            errors.append(_error(name, "Input should be a valid string", "string_type", value))
    return errors


def _default_size(model: str, body: dict[str, Any]) -> tuple[int, int]:
    if model in _SIZED_32:
        return requested_size(body, default=(1024, 768))
    if model.endswith("-ultra") and "aspect_ratio" not in body:
        return requested_size({"aspect_ratio": "16:9"})
    return requested_size(body)


def render_result(sim: Simulator, prediction: Prediction, request: Request) -> dict[str, Any]:
    """The `get_result` answer as BFL shows it now."""
    now = sim.now()
    snap = sim.snapshot(prediction, now)
    oversize = sim.config.oversized
    shown_id = padding.shown_id(oversize, prediction)
    if sim.forgotten(snap, now):
        return {"id": shown_id, "status": "Task not found"}
    body: dict[str, Any] = {
        "id": shown_id,
        "status": _PUBLIC_STATUS[snap.phase],
        "result": None,
        "progress": None if snap.terminal else snap.progress,
        "details": None,
        "preview": None,
    }
    if snap.phase == "succeeded":
        assert snap.started is not None and snap.completed is not None
        body["result"] = {
            "sample": padding.outputs(
                oversize, prediction, file_urls(sim, prediction, snap, base_url(request))
            )[0],
            "seed": prediction.seed,
            "prompt": prediction.input.get("prompt"),
            "start_time": round(sim.provider_time(snap.started), 6),
            "end_time": round(sim.provider_time(snap.completed), 6),
            "duration": round(snap.completed - snap.started, 6),
        }
    elif snap.phase == "moderated":
        body["details"] = {"Moderation Reasons": ["Simulated output moderation"]}
    elif snap.phase == "request_moderated":
        body["details"] = {"Moderation Reasons": ["Simulated input moderation"]}
    elif snap.phase in ("failed", "canceled", "aborted"):
        body["details"] = {
            "error": padding.error(oversize, prediction, "Simulated generation error")
        }
    return body


class BflApi:
    """Handlers for one mount point of the BFL-style API."""

    def __init__(self, prefix: str, *, aggregator: bool) -> None:
        self.prefix = prefix
        self.aggregator = aggregator
        self.namespace = "aggregator/flux" if aggregator else "bfl"
        # BFL itself takes `x-key`; the aggregator takes its own Bearer key
        self.auth: Literal["bearer", "x-key"] = "bearer" if aggregator else "x-key"

    def routes(self) -> list[Route]:
        p = self.prefix
        if self.aggregator:
            routes = [
                Route(f"{p}/v1/get_result", self.get_result, methods=["GET"]),
                UndocumentedRoute("credits", f"{p}/v1/credits", self.credits, methods=["GET"]),
                Route(f"{p}/v1/{{model}}", self.create, methods=["POST"]),
            ]
            return [*routes, fallback(p, routes)]
        return [
            Route(f"{p}/v1/get_result", self.get_result, methods=["GET"]),
            Route(f"{p}/v1/credits", self.credits, methods=["GET"]),
            Route(f"{p}/v1/{{model}}", self.create, methods=["POST"]),
            Route("/{region}/v1/get_result", self.get_result_in_region, methods=["GET"]),
        ]

    async def _admit(self, request: Request, route: str) -> Admitted | Response:
        return await admit(request, style="bfl", auth=self.auth, route=route, bucket=None)

    async def create(self, request: Request) -> Response:
        sim = sim_of(request)
        config = sim.config
        model = request.path_params["model"]
        if model not in config.bfl_models:
            return bfl_error(404, "Not Found")
        key = await authorize(request, style="bfl", auth=self.auth, bucket=None)
        if isinstance(key, Response):
            return key
        ok, body = await read_json(request)
        prompt = body.get("prompt") if ok and isinstance(body, dict) else None
        fault = await inject(
            request, style="bfl", route="create", prompt=prompt if isinstance(prompt, str) else None
        )
        if isinstance(fault, Response):
            return fault
        admitted = Admitted(key, fault)
        if not ok:
            return bfl_error(
                422,
                [{"loc": ["body", 0], "msg": "JSON decode error", "type": "json_invalid"}],
            )
        errors = validate(model, body)
        if errors:
            return bfl_error(422, errors)
        size = _default_size(model, body)
        ext = body.get("output_format") or ("png" if model.startswith("flux-kontext-") else "jpeg")
        created = sim.create(
            style="bfl",
            namespace=self.namespace,
            aggregator=self.aggregator,
            key=admitted.key,
            route=f"{self.prefix}/v1/{{model}}",
            model=model,
            version=model,
            inputs=body,
            size=size,
            ext=ext,
            cost=config.bfl_cost or 0.0,
            max_in_flight=config.bfl_max_in_flight,
            model_max_in_flight=config.bfl_model_max_in_flight.get(model),
            webhook=body.get("webhook_url"),
            prediction_id=str(uuid.uuid4()),
        )
        if isinstance(created, Refused):
            if created.reason == "in_flight":
                return throttled(sim, "bfl", 1, detail=IN_FLIGHT_DETAIL.format(limit=created.limit))
            return bfl_error(402, "Insufficient credits. Add credits to your account to continue.")
        if self.aggregator:
            # DeerAPI hands back BFL's own polling URL, which does not accept a DeerAPI key
            polling_url = f"https://api.{config.bfl_region}.bfl.ai/v1/get_result?id={created.id}"
        else:
            polling_url = f"{base_url(request)}/{config.bfl_region}/v1/get_result?id={created.id}"
        oversize = config.oversized
        polling_url = padding.url(polling_url, padding.size(oversize, "polling_url", created))
        has_input_image = any(body.get(n) for n in ("image", "input_image", "control_image"))
        answer: dict[str, Any] = {"id": padding.shown_id(oversize, created)}
        webhook_url = body.get("webhook_url")
        if webhook_url:
            # AsyncWebhookResponse: no polling_url to follow, so the client polls get_result by
            # id; its `status` is a free string in the spec, a new task's is Pending here
            answer.update(status="Pending", webhook_url=webhook_url)
        else:
            answer["polling_url"] = polling_url
        answer.update(
            cost=None if self.aggregator else config.bfl_cost,
            input_mp=None if self.aggregator or not has_input_image else 1.0,
            output_mp=None if self.aggregator else round(size[0] * size[1] / 1e6, 2),
        )
        fault = admitted.fault
        if fault.drop_after_create:
            sim.note_dropped()
            return DroppedResponse(answer, 200)
        if fault.kind == "reset_after_create":
            sim.note_dropped()
            return ResetResponse()
        if fault.error_after_create is not None:
            return injected_error(sim, "bfl", fault.error_after_create, fault.retry_after)
        if fault.after_seconds > 0 and not await stall(request, fault.after_seconds):
            return ResetResponse()  # the client gave up; it was created all the same
        return JSONResponse(answer)

    async def get_result(self, request: Request) -> Response:
        return await self._result(request, via_polling_url=False)

    async def get_result_in_region(self, request: Request) -> Response:
        if request.path_params["region"] != sim_of(request).config.bfl_region:
            return bfl_error(404, "Not Found")
        return await self._result(request, via_polling_url=True)

    async def _result(self, request: Request, *, via_polling_url: bool) -> Response:
        key = await authorize(request, style="bfl", auth=self.auth, bucket=None)
        if isinstance(key, Response):
            return key
        task_id = request.query_params.get("id")
        if task_id is None:
            return bfl_error(
                422,
                [
                    {
                        "loc": ["query", "id"],
                        "msg": "Field required",
                        "type": "missing",
                        "input": None,
                    }
                ],
            )
        sim = sim_of(request)
        prediction = sim.get(self.namespace, key, task_id)
        fault = await inject(
            request,
            style="bfl",
            route="get",
            prompt=None if prediction is None else prediction.prompt,
        )
        if isinstance(fault, Response):
            return fault
        sim.note_poll(via_polling_url=via_polling_url)
        # BFL answers an unknown id with HTTP 200, not 404; and, sometimes, a task it has just
        # accepted too
        if (
            prediction is None
            or fault.kind == "not_found"
            or sim.unknown_yet(prediction, sim.now())
        ):
            return JSONResponse({"id": task_id, "status": "Task not found"})
        return JSONResponse(render_result(sim, prediction, request))

    async def credits(self, request: Request) -> Response:
        admitted = await self._admit(request, "get")
        if isinstance(admitted, Response):
            return admitted
        left = sim_of(request).credits_left(admitted.key)
        # an unlimited account still answers a number, as a real account always has a balance
        return JSONResponse({"credits": 1_000_000.0 if left is None else round(left, 4)})
