"""Contender: BFL's documented polling loop, made concurrent the way a user would.

Per job, under one `asyncio.Semaphore` at BFL's in-flight cap: POST /v1/{model} with the
`x-key` header, then sleep the poll interval and GET the returned `polling_url` until the status
is `Ready` (or an error or moderation status), then GET `result.sample` and write the file. The
documented loop retries nothing; this one adds what a user adds after the first failures:
a 429 is counted and the request sent again after an exponential backoff (1, 2, 4, 8 s real,
capped at 10 s), and a connection error or timeout likewise, up to 5 tries a step. Resending a
create after a connection error may create (and bill) it twice: the simulator counts that.

Run as `python -m benchmarks.contenders.bfl_loop --help`; writes a JSON report for the harness.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

from benchmarks.contenders.common import (
    MAX_TRANSPORT_TRIES,
    JobRecord,
    Report,
    load_prompts,
    now,
    parse_args,
    user_backoff,
)

API_KEY = "bench-bfl-key"
HEADERS = {"accept": "application/json", "x-key": API_KEY}
TERMINAL_ERRORS = frozenset(
    {"Error", "Failed", "Request Moderated", "Content Moderated", "Task not found"}
)


async def send(
    call: Callable[[], Awaitable[httpx.Response]],
    report: Report,
    settings: argparse.Namespace,
    deadline: float,
) -> httpx.Response:
    """One request with a user's retries: 429 and connection errors, within the deadline."""
    attempt = failures = 0
    while True:
        try:
            response = await call()
        except httpx.TransportError:
            report.transport_errors += 1
            failures += 1
            if failures >= MAX_TRANSPORT_TRIES or time.monotonic() > deadline:
                raise
        else:
            if response.status_code != 429:
                response.raise_for_status()
                return response
            report.http_429_seen += 1
            if time.monotonic() > deadline:
                raise TimeoutError("still rate limited at the job's deadline")
        attempt += 1
        await asyncio.sleep(user_backoff(attempt, settings.time_scale))


async def one_job(
    client: httpx.AsyncClient,
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
            created = await send(
                lambda: client.post(
                    f"{settings.base_url}/v1/{settings.model}",
                    headers=HEADERS,
                    json={"prompt": prompt, **base_input},
                ),
                report,
                settings,
                deadline,
            )
            task = created.json()
            record.remote_id = task["id"]
            polling_url = task["polling_url"]
            while True:
                if time.monotonic() > deadline:
                    raise TimeoutError("not ready by the job's deadline")
                await asyncio.sleep(settings.poll_interval)
                answer = await send(
                    lambda: client.get(polling_url, headers=HEADERS), report, settings, deadline
                )
                result = answer.json()
                status = result.get("status")
                if status == "Ready":
                    record.detected_at = now()
                    sample = result["result"]["sample"]
                    break
                if status in TERMINAL_ERRORS:
                    record.error = str(status)
                    return
            # the file host wants no key
            image = await send(lambda: client.get(sample), report, settings, deadline)
            path = Path(settings.out) / f"{index:06d}.{base_input.get('output_format', 'jpeg')}"
            path.write_bytes(image.content)
            record.on_disk_at = now()
        except Exception as exc:  # one failed job must not stop the others
            record.error = f"{type(exc).__name__}: {exc}"


async def main_async() -> None:
    settings = parse_args("BFL's documented polling loop under a semaphore.")
    prompts = load_prompts(settings.prompts)
    base_input = json.loads(settings.input)
    settings.out.mkdir(parents=True, exist_ok=True)
    report = Report(contender="bfl_loop")
    semaphore = asyncio.Semaphore(settings.concurrency)
    async with httpx.AsyncClient(timeout=30.0) as client:
        report.started_at = now()
        await asyncio.gather(
            *(
                one_job(client, semaphore, settings, base_input, i, prompt, report)
                for i, prompt in enumerate(prompts)
            )
        )
    report.ended_at = now()
    report.jobs.sort(key=lambda r: r.index)
    report.write(settings.report)


def main() -> None:
    asyncio.run(main_async())


if __name__ == "__main__":
    main()
