"""Bounded answers and bounded bugs over real sockets: a stub server on 127.0.0.1 answering
bodies of 30 MB, the simulator answering fields beyond any sane size, and handlers that raise,
in this process against real SQLite files and PostgreSQL."""

from __future__ import annotations

import logging
import re
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import pytest
import sqlalchemy as sa

from runner import app, bounds, states
from runner.campaign import ProviderConfig
from runner.providers.base import ErrorKind, ProviderError
from runner.providers.bfl import BflProvider
from runner.providers.errors import ACCEPT_ENCODING, request_json
from runner.providers.factory import CookielessClient, fast_transport
from runner.simulator import SimConfig, running_in_thread
from runner.simulator.server import SimHandle
from runner.states import State
from runner.store import Store, open_store
from runner.worker import bugs, pool
from runner.worker.pool import PoolOptions
from tests.factories import campaign

MB = 1_000_000
FAST = {"duration_median": 0.1, "duration_sigma": 0.1}


# -- a stub server that answers whatever size it is asked for --------------------------------


class _Big(BaseHTTPRequestHandler):
    """`?size=N` bytes of a JSON object, made as they are sent (never held whole here either),
    `&status=S`, `&length=0` without a Content-Length (the body ends when the connection
    does), `&gzip=1` compressed (without a length); a POST answers the body it got inside
    `{"input": ...}` (an echo, as a Replicate prediction shows its input)."""

    protocol_version = "HTTP/1.1"
    CHUNK = b"x" * (1 << 16)

    def do_GET(self) -> None:
        query = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
        size = int(query.get("size", "100"))
        head, tail = b'{"status": "starting", "id": "', b'"}'
        filler = max(0, size - len(head) - len(tail))

        def pieces() -> Iterator[bytes]:
            yield head
            for _ in range(filler // len(self.CHUNK)):
                yield self.CHUNK
            yield self.CHUNK[: filler % len(self.CHUNK)] + tail

        self._answer(int(query.get("status", "200")), pieces(), size, query)

    def do_POST(self) -> None:
        sent = self.rfile.read(int(self.headers["Content-Length"]))
        body = b'{"status": "starting", "id": "p1", "input": ' + sent + b"}"
        self._answer(201, iter([body]), len(body), {})

    def _answer(
        self, status: int, pieces: Iterator[bytes], size: int, query: dict[str, str]
    ) -> None:
        packed = query.get("gzip") == "1"
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if packed:
            self.send_header("Content-Encoding", "gzip")
        if packed or query.get("length") == "0":
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(size))
        self.end_headers()
        packer = zlib.compressobj(1, zlib.DEFLATED, 31) if packed else None
        try:
            for piece in pieces:
                self.wfile.write(packer.compress(piece) if packer else piece)
            if packer:
                self.wfile.write(packer.flush())
        except OSError:
            pass  # the client hung up: it read what it wanted


@pytest.fixture
def big_host() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Big)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _ask(url: str, method: str = "GET", **kwargs: Any) -> tuple[Any, int, float]:
    """request_json through the worker's own client: (the answer or the ProviderError it
    raised, the peak of memory allocated meanwhile, seconds taken)."""

    async def main() -> Any:
        headers = {"Accept-Encoding": ACCEPT_ENCODING}  # as the worker's clients ask
        async with CookielessClient(
            transport=fast_transport(4), timeout=30, headers=headers
        ) as client:
            try:
                return await request_json(client, method, url, "poll", **kwargs)
            except ProviderError as error:
                return error

    tracemalloc.start()
    started = time.monotonic()
    try:
        result = anyio.run(main)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, peak, time.monotonic() - started


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "how", ["length=1", "length=0", "gzip=1"], ids=["announced", "unannounced", "compressed"]
)
def test_a_30_mb_answer_is_refused_without_being_held(big_host: str, how: str) -> None:
    error, peak, took = _ask(f"{big_host}/v1/predictions/p1?size={30 * MB}&{how}")
    assert isinstance(error, ProviderError), "a 30 MB answer was taken"
    assert error.kind is ErrorKind.OVERSIZED
    assert "longer than 1,048,576 bytes, the most runner reads (1 MiB of an API answer)" in str(
        error
    )
    print(f"30 MB answer ({how}): refused in {took:.2f}s, peak memory {peak:,} bytes")
    assert peak < 8 * MB, f"{peak:,} bytes held while refusing a 30 MB answer"
    assert took < 10


@pytest.mark.timeout(60)
def test_an_answer_within_the_bound_is_read_as_it_always_was(big_host: str) -> None:
    answer, _, _ = _ask(f"{big_host}/v1/predictions/p1?size={MB}&length=0")
    assert not isinstance(answer, ProviderError), answer
    status, body = answer
    assert status == 200 and len(body["id"]) > 990_000


@pytest.mark.timeout(60)
def test_an_error_answer_of_30_mb_is_still_classified_by_its_status(big_host: str) -> None:
    error, peak, _ = _ask(f"{big_host}/v1/predictions/p1?size={30 * MB}&status=429")
    assert isinstance(error, ProviderError)
    assert error.kind is ErrorKind.RATE_LIMITED and error.status_code == 429
    assert len(error.message) <= bounds.MAX_ERROR
    assert peak < 8 * MB


@pytest.mark.timeout(60)
def test_an_answer_may_echo_the_input_that_was_sent(big_host: str) -> None:
    # a create with a large input (an image as a data URL) is answered with that input in it
    image = "data:image/png;base64," + "A" * 900_000
    answer, _, _ = _ask(f"{big_host}/v1/predictions", "POST", json={"image": image})
    assert not isinstance(answer, ProviderError), answer
    assert answer[1]["input"]["image"] == image
    # a query of it is allowed the same, when told (Handle.echo)
    url = f"{big_host}/v1/predictions/p1?size={int(1.8 * MB)}"
    refused, _, _ = _ask(url)
    assert isinstance(refused, ProviderError) and refused.kind is ErrorKind.OVERSIZED
    allowed, _, _ = _ask(url, echo=len(image))
    assert not isinstance(allowed, ProviderError), allowed


# -- the simulator answering fields beyond any sane size --------------------------------------


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = open_store(db_url)
    yield s
    s.close()


def _provider(sim: SimHandle, style: str) -> ProviderConfig:
    if style == "bfl":
        return ProviderConfig("bfl", "bfl", sim.url, "x-key", "RUNNER_TEST_KEY")
    return ProviderConfig("replicate", "replicate", sim.url, "bearer", "RUNNER_TEST_KEY")


def _run(store: Store, monkeypatch: pytest.MonkeyPatch, limit: float = 60) -> Any:
    monkeypatch.setenv("RUNNER_TEST_KEY", "test-key-0000")
    options = PoolOptions(tick=0.05)

    async def main() -> Any:
        with anyio.fail_after(limit):
            return await app.work(
                store, ["c1"], options=options, handle_signals=False, progress_every=0
            )

    return anyio.run(main)


def _largest_stored(store: Store) -> dict[str, int]:
    """The longest value of each column a provider's words reach, over every job."""
    with store.read() as conn:
        row = conn.execute(
            sa.text(
                "SELECT MAX(LENGTH(remote_id)), MAX(LENGTH(polling_url)), "
                "MAX(LENGTH(CAST(output_urls AS TEXT))), MAX(LENGTH(error)) FROM jobs"
            )
        ).one()
    return dict(
        zip(
            ("remote_id", "polling_url", "output_urls", "error"), (v or 0 for v in row), strict=True
        )
    )


def _nothing_oversized(store: Store) -> None:
    largest = _largest_stored(store)
    assert largest["remote_id"] <= bounds.MAX_ID, largest
    assert largest["polling_url"] <= bounds.MAX_URL, largest
    assert largest["output_urls"] <= bounds.MAX_OUTPUTS * (bounds.MAX_URL + 4), largest
    assert largest["error"] <= bounds.MAX_ERROR, largest


def _jobs(store: Store) -> list[states.Job]:
    return list(store.jobs("c1"))


@pytest.mark.timeout(90)
@pytest.mark.parametrize("style", ["bfl", "replicate"])
def test_a_create_answered_with_a_megabyte_id_is_uncertain_and_nothing_of_it_is_stored(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, style: str
) -> None:
    config = SimConfig(**FAST, oversized={"id": MB})
    with running_in_thread(config=config) as sim:
        store.enqueue(campaign(n=3, out=tmp_path / "out", provider=_provider(sim, style)))
        report = _run(store, monkeypatch)
        assert sim.sim.stats()["creates"] == 3  # each sent once, never again
    assert app.exit_code(store, ["c1"], report) == app.EXIT_JOBS_FAILED
    for job in _jobs(store):
        assert job.state is State.UNCERTAIN and job.remote_id is None
        assert "1,000,000 characters long, more than the 200 runner takes" in (job.error or "")
    _nothing_oversized(store)


@pytest.mark.timeout(90)
def test_a_polling_url_beyond_8_kib_makes_the_create_uncertain(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = SimConfig(**FAST, oversized={"polling_url": 100_000, "match": "prompt 1"})
    with running_in_thread(config=config) as sim:
        store.enqueue(campaign(n=3, out=tmp_path / "out", provider=_provider(sim, "bfl")))
        _run(store, monkeypatch)
        assert sim.sim.stats()["creates"] == 3
    by_key = {job.key: job for job in _jobs(store)}
    assert by_key["k1"].state is State.UNCERTAIN
    assert "its polling_url is 100,000 characters long, more than the 8,192" in (
        by_key["k1"].error or ""
    )
    assert by_key["k0"].state is by_key["k2"].state is State.DONE  # the others are untouched
    _nothing_oversized(store)


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("oversized", "reason"),
    [
        ({"output_url": 100_000}, "an output URL is 100,000 characters long, more than the 8,192"),
        ({"outputs": 40}, "the answer lists 40 output URLs, more than the 16"),
        ({"error": 30 * MB}, "the answer is longer than 1,048,"),
    ],
    ids=["output-url", "outputs", "error-30mb"],
)
@pytest.mark.parametrize("prefer_wait", [None, 5], ids=["polled", "prefer-wait"])
def test_a_prediction_that_says_too_much_of_itself_fails_with_the_reason(
    store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    oversized: dict[str, int],
    reason: str,
    prefer_wait: int | None,
) -> None:
    faults = {"create": {"fail_rate": 1.0}} if "error" in oversized else {}
    config = SimConfig(**FAST, oversized=oversized, faults=faults)
    with running_in_thread(config=config) as sim:
        provider = ProviderConfig(
            "replicate", "replicate", sim.url, "bearer", "RUNNER_TEST_KEY", prefer_wait=prefer_wait
        )
        store.enqueue(campaign(n=2, out=tmp_path / "out", provider=provider))
        _run(store, monkeypatch)
        assert sim.sim.stats()["creates"] == 2
    for job in _jobs(store):
        assert reason in (job.error or ""), job.error
        if "error" in oversized and prefer_wait:
            # the create's own answer is beyond the bound: no id can be read from it
            assert job.state is State.UNCERTAIN and job.remote_id is None
            continue
        assert job.state is State.FAILED, (job.state, job.error)
        assert job.remote_id is not None  # held: the prediction is known, only not usable
        assert "gave up after 3 failed status queries" in (job.error or "")
    _nothing_oversized(store)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("style", ["bfl", "replicate"])
def test_a_megabyte_error_text_is_stored_cut_to_4_kib(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, style: str
) -> None:
    config = SimConfig(**FAST, oversized={"error": MB // 2}, faults={"create": {"fail_rate": 1.0}})
    with running_in_thread(config=config) as sim:
        store.enqueue(campaign(n=2, out=tmp_path / "out", provider=_provider(sim, style)))
        _run(store, monkeypatch)
    for job in _jobs(store):
        assert job.state is State.FAILED
        assert job.error is not None and len(job.error) == bounds.MAX_ERROR
        assert job.error.startswith(("Error: {'error': 'Simulated", "Prediction failed"))
        assert job.error.endswith("characters, cut to 4,096)")
    _nothing_oversized(store)


def test_the_store_cuts_every_error_text_it_writes(store: Store, tmp_path: Path) -> None:
    store.enqueue(campaign(n=1, out=tmp_path / "out"))
    (job,) = _jobs(store)
    change = states.Change(job.id, State.QUEUED, State.FAILED, {"error": "e" * MB})
    assert store.apply(change, owner=None)
    (job,) = _jobs(store)
    assert job.error is not None and len(job.error) == bounds.MAX_ERROR
    assert job.error.endswith("(1,000,000 characters, cut to 4,096)")


def test_a_job_that_moves_on_starts_its_count_of_bugs_again(store: Store, tmp_path: Path) -> None:
    store.enqueue(campaign(n=1, out=tmp_path / "out"))
    (job,) = _jobs(store)
    assert store.apply(states.Change(job.id, State.QUEUED, State.QUEUED, {"bugs": 3}), owner=None)
    assert _jobs(store)[0].bugs == 3  # a bug's retry keeps its state and its count
    assert store.apply(states.Change(job.id, State.QUEUED, State.SUBMITTING), owner=None)
    assert _jobs(store)[0].bugs == 0


def test_a_create_nobody_holds_is_reconciled_not_left_submitting(
    store: Store, tmp_path: Path
) -> None:
    # what the old handler of unexpected errors left behind: the lease given back mid-create
    store.enqueue(campaign(n=1, out=tmp_path / "out"))
    (job,) = _jobs(store)
    begin = states.begin_submit(job, time.time(), None)
    assert store.apply(begin, owner=None, release=True)
    (job,) = _jobs(store)
    assert job.state is State.SUBMITTING and job.lease_expires_at is None
    assert store.mark_orphaned_submits(time.time()) == 1
    assert _jobs(store)[0].state is State.RECONCILING


# -- handlers that raise ----------------------------------------------------------------------


def _bug_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith("unexpected error on job")]


@pytest.mark.timeout(90)
def test_a_handler_that_keeps_raising_is_tried_five_times_then_failed_with_the_reason(
    store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(self: BflProvider, handle: Any) -> Any:
        raise RuntimeError("a bug in the poll")

    monkeypatch.setattr(BflProvider, "poll", broken)
    caplog.set_level(logging.INFO, logger="runner")
    with running_in_thread(config=SimConfig(**FAST)) as sim:
        store.enqueue(campaign(n=2, out=tmp_path / "out", provider=_provider(sim, "bfl")))
        started = time.monotonic()
        report = _run(store, monkeypatch)
        took = time.monotonic() - started
        assert sim.sim.stats()["creates"] == 2
    assert app.exit_code(store, ["c1"], report) == app.EXIT_JOBS_FAILED
    for job in _jobs(store):
        assert job.state is State.FAILED and job.bugs == states.MAX_BUGS
        assert job.error == (
            "gave up after 5 unexpected errors (last: RuntimeError: a bug in the poll)"
        )
    lines = _bug_lines(caplog)
    assert len(lines) == 2 * states.MAX_BUGS  # one line each time, per job
    assert sum("Traceback" in r.getMessage() for r in lines) == 1  # the same bug: once
    assert sum(r.levelno == logging.ERROR for r in lines) == 2  # each job's end
    assert took < 30


@pytest.mark.timeout(90)
def test_a_bug_after_a_create_was_sent_is_never_resent(
    store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise KeyError("a bug in reading the create's answer")

    monkeypatch.setattr(pool.states, "on_created", broken)
    caplog.set_level(logging.INFO, logger="runner")
    with running_in_thread(config=SimConfig(**FAST)) as sim:
        store.enqueue(campaign(n=3, out=tmp_path / "out", provider=_provider(sim, "bfl")))
        report = _run(store, monkeypatch)
        assert sim.sim.stats()["creates"] == 3  # paid for once each: never sent again
    assert app.exit_code(store, ["c1"], report) == app.EXIT_JOBS_FAILED
    for job in _jobs(store):  # BFL lists nothing: reconciling it can only tell uncertain
        assert job.state is State.UNCERTAIN
        assert "runner retry c1 --uncertain" in (job.error or "")
    lines = _bug_lines(caplog)
    assert len(lines) == 3
    assert all(
        "it is now reconciling: unexpected error while creating" in r.getMessage() for r in lines
    )


@pytest.mark.timeout(120)
def test_the_count_of_bugs_survives_a_restart(
    store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0
    reached = anyio.Event()

    async def broken(self: BflProvider, handle: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3 and not reached.is_set():  # two bugs are recorded: "kill" it now
            reached.set()
            await anyio.sleep_forever()
        raise RuntimeError("a bug in the poll")

    monkeypatch.setattr(BflProvider, "poll", broken)
    monkeypatch.setenv("RUNNER_TEST_KEY", "test-key-0000")
    caplog.set_level(logging.INFO, logger="runner")
    with running_in_thread(config=SimConfig(**FAST)) as sim:
        store.enqueue(campaign(n=1, out=tmp_path / "out", provider=_provider(sim, "bfl")))

        async def first_run() -> None:
            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:

                    async def work() -> None:
                        await app.work(
                            store,
                            ["c1"],
                            options=PoolOptions(tick=0.05),
                            handle_signals=False,
                            progress_every=0,
                        )

                    tg.start_soon(work)
                    await reached.wait()
                    tg.cancel_scope.cancel()

        anyio.run(first_run)
        (job,) = _jobs(store)
        assert job.state is State.RUNNING and job.bugs == 2
        caplog.clear()
        _run(store, monkeypatch)
    (job,) = _jobs(store)
    assert job.state is State.FAILED and job.bugs == states.MAX_BUGS
    # the second run went on from the two bugs of the first: three more, not five
    assert len(_bug_lines(caplog)) == states.MAX_BUGS - 2


@pytest.mark.timeout(60)
def test_a_bug_never_writes_the_api_key_to_the_database_or_the_log(
    store: Store,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = "test-key-0000"

    async def broken(self: BflProvider, handle: Any) -> Any:
        raise RuntimeError(f"headers were {{'x-key': '{key}'}}")

    monkeypatch.setattr(BflProvider, "poll", broken)
    caplog.set_level(logging.DEBUG, logger="runner")  # -v: every traceback
    with running_in_thread(config=SimConfig(**FAST)) as sim:
        store.enqueue(campaign(n=1, out=tmp_path / "out", provider=_provider(sim, "bfl")))
        _run(store, monkeypatch)
    (job,) = _jobs(store)
    assert job.state is State.FAILED and "[redacted]" in (job.error or "")
    assert key not in (job.error or "")
    assert not [r for r in caplog.records if key in r.getMessage()]
    assert sum("Traceback" in r.getMessage() for r in _bug_lines(caplog)) == states.MAX_BUGS


def test_what_a_bug_is_called_in_a_line() -> None:
    text = bugs.bug_text(RuntimeError("x" * 10_000), ["secret-key-1234"])
    assert text.startswith("RuntimeError: xxx") and len(text) == bugs.BUG_TEXT
    assert bugs.bug_text(ValueError("bad secret-key-1234"), ["secret-key-1234"]) == (
        "ValueError: bad [redacted]"
    )
    assert re.fullmatch(r"RuntimeError", bugs.bug_site(RuntimeError())[0])
