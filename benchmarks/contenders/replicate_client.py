"""Contender: what a user writes today with the official `replicate` client (1.0.x).

asyncio, one `asyncio.Semaphore`, and per job `predictions.async_create(model=..., input=...)`,
`prediction.async_wait()` (which polls every REPLICATE_POLL_INTERVAL seconds, 0.5 by default;
the harness sets it to 0.5 s times the workload's time scale), then each output URL fetched with
httpx and written to disk. No `wait=` (Prefer: wait): the plain user code does not set it.

The client never retries a POST, so a create answered 429 raises `ReplicateError`; like a user's
loop, it is caught, counted, and the create sent again after an exponential backoff (1, 2, 4,
8 s real, capped at 10 s; the client does not expose the body's `retry_after`). The client's
transport retries a GET answered 429 by itself (ten tries, backoff from 0.1 s); if that still
fails, `async_wait` raises, and the loop counts it and goes back to waiting after the same
backoff. A connection error or timeout is retried the same way, up to 5 tries a step: resending
a create after one may create (and bill) it twice, which the simulator counts. The client's own
hidden GET retries are not visible here; the simulator counts every 429 it sent.

Run as `python -m benchmarks.contenders.replicate_client --help`; writes a JSON report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import replicate
from replicate.exceptions import ReplicateError

from benchmarks.contenders.common import (
    MAX_TRANSPORT_TRIES,
    JobRecord,
    Report,
    load_prompts,
    now,
    parse_args,
    user_backoff,
)

API_TOKEN = "r8_bench_token"
T = TypeVar("T")


async def retrying(
    call: Callable[[], Awaitable[T]],
    report: Report,
    settings: argparse.Namespace,
    deadline: float,
) -> T:
    """A user's retry loop around one step: 429 until the deadline, connection errors 5 times."""
    attempt = failures = 0
    while True:
        try:
            return await call()
        except ReplicateError as exc:
            if exc.status != 429 or time.monotonic() > deadline:
                raise
            report.http_429_seen += 1
        except httpx.TransportError:
            report.transport_errors += 1
            failures += 1
            if failures >= MAX_TRANSPORT_TRIES or time.monotonic() > deadline:
                raise
        attempt += 1
        await asyncio.sleep(user_backoff(attempt, settings.time_scale))


async def one_job(
    client: replicate.Client,
    files: httpx.AsyncClient,
    semaphore: asyncio.Semaphore,
    settings: argparse.Namespace,
    base_input: dict[str, Any],
    index: int,
    prompt: str,
    report: Report,
) -> None:
    record = JobRecord(index)
    report.jobs.append(record)
    async with semaphore:
        deadline = time.monotonic() + settings.job_timeout
        try:
            prediction = await retrying(
                lambda: client.predictions.async_create(
                    model=settings.model, input={"prompt": prompt, **base_input}
                ),
                report,
                settings,
                deadline,
            )
            record.remote_id = prediction.id
            await retrying(prediction.async_wait, report, settings, deadline)
            record.detected_at = now()
            if prediction.status != "succeeded":
                record.error = f"{prediction.status}: {prediction.error}"
                return
            output = prediction.output
            urls = output if isinstance(output, list) else [output]
            ext = base_input.get("output_format", "webp")
            for n, url in enumerate(urls):

                async def fetch(url: str = url) -> httpx.Response:
                    response = await files.get(url)
                    response.raise_for_status()
                    return response

                response = await retrying(fetch, report, settings, deadline)
                (Path(settings.out) / f"{index:06d}_{n}.{ext}").write_bytes(response.content)
            record.on_disk_at = now()
        except Exception as exc:  # one failed job must not stop the others
            record.error = f"{type(exc).__name__}: {exc}"


async def main_async() -> None:
    settings = parse_args("The official replicate client, asyncio and a semaphore.")
    # read by the client when it is built; user code leaves it at its default, 0.5 s
    os.environ["REPLICATE_POLL_INTERVAL"] = repr(settings.poll_interval)
    prompts = load_prompts(settings.prompts)
    base_input = json.loads(settings.input)
    settings.out.mkdir(parents=True, exist_ok=True)
    report = Report(contender="replicate_client")
    semaphore = asyncio.Semaphore(settings.concurrency)
    client = replicate.Client(api_token=API_TOKEN, base_url=settings.base_url)
    try:
        async with httpx.AsyncClient(timeout=30.0) as files:
            report.started_at = now()
            await asyncio.gather(
                *(
                    one_job(client, files, semaphore, settings, base_input, i, prompt, report)
                    for i, prompt in enumerate(prompts)
                )
            )
    finally:
        # the client has no close(); its lazily built httpx client would leak its sockets
        await client._async_client.aclose()
    report.ended_at = now()
    report.jobs.sort(key=lambda r: r.index)
    report.write(settings.report)


def main() -> None:
    asyncio.run(main_async())


if __name__ == "__main__":
    main()
