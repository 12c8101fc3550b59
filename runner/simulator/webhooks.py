"""The simulator's webhook sender: POSTs each prediction's events to its `webhook` URL, signed
as Replicate signs them (Standard Webhooks).

Each request carries `webhook-id` (the same for every retry of one event), `webhook-timestamp`
(epoch seconds of this attempt) and `webhook-signature: v1,<base64>`, the HMAC-SHA256 of
`"{id}.{timestamp}.{body}"` keyed with the base64 part of the account's `whsec_` secret. The
body is the prediction object as `GET /v1/predictions/{id}` shows it. A `completed` event that
gets no answer, a 429 or a 5xx is sent again a few times, as Replicate retries only the
terminal one.

`SimConfig.webhook_mode` spoils them on purpose (unsigned, forged, tampered, stale, replayed)
so that tests can show a receiver refuses them. The signing here is written independently of
`runner.webhooks`, which verifies them: the two meet only over the wire.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets

import anyio
import httpx

from runner.simulator.replicate_api import render_at
from runner.simulator.state import Prediction, Simulator

log = logging.getLogger("runner.simulator")

LOOK_EVERY = 0.05  # seconds: the longest wait before a new prediction's events are looked at
RETRIES = 3  # more attempts for a `completed` event that was not accepted
RETRY_AFTER = 0.5  # seconds before the first retry, doubled each time
STALE_BY = 600  # seconds: how old a `stale` webhook's timestamp is
TIMEOUT = 10.0


def _signature(secret: str, msg_id: str, timestamp: str, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    content = f"{msg_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()


def signed_headers(
    sim: Simulator, prediction: Prediction, msg_id: str, body: bytes, mode: str
) -> tuple[dict[str, str], bytes]:
    """The headers of one attempt (and the body as sent), spoiled as `mode` says."""
    timestamp = int(sim.provider_time(sim.now()))  # the sender's clock, skewed or not
    if mode == "stale":
        timestamp -= STALE_BY
    secret = sim.webhook_secret(prediction.key)
    if mode == "forged":
        secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    headers = {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": _signature(secret, msg_id, str(timestamp), body),
    }
    if mode == "unsigned":
        del headers["webhook-signature"]
    if mode == "tampered":
        body = body.replace(b'"status"', b'"status" ', 1)
    return headers, body


async def _post(
    sim: Simulator, client: httpx.AsyncClient, url: str, headers: dict[str, str], body: bytes
) -> int | None:
    try:
        response = await client.post(url, content=body, headers=headers)
    except httpx.HTTPError as exc:
        log.debug("webhook to %s got no answer: %s", url, exc)
        sim.note_webhook("error")
        return None
    sim.note_webhook(str(response.status_code))
    return response.status_code


async def send_event(
    sim: Simulator, client: httpx.AsyncClient, prediction: Prediction, event: str, base: str
) -> None:
    """Send one event of a prediction to its webhook, retrying a terminal one that failed."""
    url = prediction.webhook
    mode = sim.config.webhook_mode
    if url is None or mode == "off":
        return
    body = json.dumps(render_at(sim, prediction, base)).encode()
    msg_id = "msg_" + secrets.token_hex(12)
    attempts = 1 + (RETRIES if event == "completed" else 0)
    wait = RETRY_AFTER
    for _ in range(attempts):
        headers, sent = signed_headers(sim, prediction, msg_id, body, mode)
        status = await _post(sim, client, url, headers, sent)
        if mode == "replay":
            await _post(sim, client, url, headers, sent)  # the very same request again
        if status is not None and status < 500 and status != 429:
            return
        await anyio.sleep(wait)
        wait *= 2


async def deliver(sim: Simulator, base: str) -> None:
    """Send every due webhook event until cancelled; `base` is the simulator's own URL (the
    output URLs in the bodies point at it)."""
    async with (
        httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False, trust_env=False) as client,
        anyio.create_task_group() as tg,
    ):
        while True:
            now = sim.now()
            due, next_at = sim.webhooks_due(now)
            for prediction, event in due:
                tg.start_soon(send_event, sim, client, prediction, event, base)
            await anyio.sleep(max(0.002, min(LOOK_EVERY, next_at - now)))
