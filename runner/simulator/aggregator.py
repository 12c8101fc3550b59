"""What the aggregator mounts (`/replicate`, `/flux`) serve beyond their documented routes.

DeerAPI and CometAPI document create and get only. The routes Replicate and BFL have beside
those (list, cancel, the webhook secret, the account, BFL's credits) answer there as an unknown
URL does, unless `SimConfig.aggregator_routes` names them; and any path under the mount that
nothing serves answers in the aggregator's own error shape (an OpenAI-style gateway's), not the
upstream provider's. The root mounts, the providers themselves, never use this.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route

from runner.simulator._http import sim_of

Endpoint = Callable[[Request], Awaitable[Response]]

_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _gateway_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    body = {"error": {"message": message, "type": "invalid_request_error"}}
    return JSONResponse(body, status_code=status, headers=headers)


def invalid_url(request: Request) -> Response:
    return _gateway_error(404, f"Invalid URL ({request.method} {request.url.path})")


class UndocumentedRoute(Route):
    """A route served only while `aggregator_routes` holds `name`, read per request so that a
    test can switch it while the simulator runs."""

    def __init__(self, name: str, path: str, endpoint: Endpoint, *, methods: list[str]) -> None:
        self.name_in_config = name

        async def gated(request: Request) -> Response:
            # before auth and limits: the gateway's router turns it away, nothing else happens
            if not self.served(request):
                return invalid_url(request)
            return await endpoint(request)

        super().__init__(path, gated, methods=methods, name=endpoint.__name__)

    def served(self, request: Request) -> bool:
        return self.name_in_config in sim_of(request).config.aggregator_routes


def fallback(prefix: str, routes: list[Route]) -> Route:
    """The last route under `prefix`: 405 for a path some served route has with another
    method, else 404, both as the gateway answers them."""

    async def unrouted(request: Request) -> Response:
        allowed = sorted(
            {
                method
                for route in routes
                if route.matches(request.scope)[0] is not Match.NONE
                and (not isinstance(route, UndocumentedRoute) or route.served(request))
                for method in route.methods or ()
            }
        )
        if allowed:
            return _gateway_error(
                405,
                f"Method Not Allowed ({request.method} {request.url.path})",
                headers={"Allow": ", ".join(allowed)},
            )
        return invalid_url(request)

    return Route(f"{prefix}/{{rest:path}}", unrouted, methods=_ALL_METHODS)
