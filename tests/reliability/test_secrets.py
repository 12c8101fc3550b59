"""The API key never leaves the process except in the auth header sent to the API itself.

Two levels of proof:

- Whole campaigns through the `runner` CLI as a subprocess, against the simulator as a real
  provider preset (`base_url` override, real key from the environment), with faults on every
  route so the error paths run too, logged at `-v -v`, and the simulator echoing the key in
  every encoding a debugging proxy uses (`echo_key`: as is, base64, base64url, percent, hex)
  into error answers and predictions; then every file under the test's folder (database and its
  -wal/-shm, images, sidecars, manifest, gallery, logs, captured output) is searched for the key
  in each of those encodings and more. The database file must be readable by its owner only.
- The provider adapters against a server that echoes the request's headers in its answers (as
  error detail, plain text, problem+json, a malformed status line, a 200 that is not a
  prediction, UTF-16, JSON-escaped...), and against the simulator echoing each encoding: no
  ProviderError, nor anything chained to it, nor a status read from a 200, may carry the key.

The canary key holds `/` and `+`, so that its percent-encoded and JSON-escaped forms are not
the key as is.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import socket
import stat
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote, quote_plus

import anyio
import httpx
import pytest

from runner.campaign import ProviderConfig
from runner.providers.base import Handle, Phase, ProviderError
from runner.providers.errors import (
    REDACTED,
    credentials,
    from_exception,
    from_response,
    redact,
)
from runner.providers.factory import make_provider
from runner.simulator import SimConfig, running_in_thread
from runner.simulator.config import ECHO_ENCODINGS
from runner.simulator.server import SimHandle
from tests.acceptance.conftest import (
    KEY_ENV,
    SimProcess,
    db_rows,
    run_cli,
    runner_env,
    start_simulator,
    stop_simulator,
    write_jobfile,
)

PREFIX = "r8_SECRETCANARY_"


def make_canary() -> str:
    return PREFIX + secrets.token_hex(8) + "/+" + secrets.token_hex(8)


def _b64_cores(data: bytes) -> set[bytes]:
    """The parts of `data`'s base64 that do not depend on what surrounds it, at every alignment."""
    cores: set[bytes] = set()
    for pad in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(b"\0" * pad + data)
            start = 4 if pad else 0  # the first group mixes in the padding bytes
            cores.add(encoded[start:-4])  # the last group may mix in what follows
    return cores


def _percent(text: str) -> set[bytes]:
    """`text` percent-encoded as `quote`, `quote_plus` and `encodeURIComponent` write it."""
    return {quote(text, safe="").encode(), quote(text).encode(), quote_plus(text).encode()}


def needles(key: str) -> dict[str, bytes | set[bytes]]:
    raw = key.encode()
    return {
        "key": raw,
        "key's random part": key.removeprefix(PREFIX).encode(),
        "Bearer key": b"Bearer " + raw,
        "key as hex": raw.hex().encode(),
        "'Bearer key' as hex": (b"Bearer " + raw).hex().encode(),
        "key in base64": _b64_cores(raw),
        "'Bearer key' in base64": _b64_cores(b"Bearer " + raw),
        "key percent-encoded": _percent(key),
        "'Bearer key' percent-encoded": _percent("Bearer " + key),
        "key with every byte percent-encoded": "".join(f"%{b:02x}" for b in raw).encode(),
        "key JSON-escaped": key.replace("/", "\\/").encode(),
        "key in UTF-16": key.encode("utf-16-le"),
    }


# Forms whose letters may come in either case (hex digits, percent escapes).
_ANY_CASE = ("as hex", "percent-encoded")


def find_key(data: bytes, key: str) -> list[str]:
    """Which forms of `key` occur in `data`."""
    found = []
    lowered = data.lower()
    for form, needle in needles(key).items():
        options = needle if isinstance(needle, set) else {needle}
        if any(word in form for word in _ANY_CASE):
            hit = any(n.lower() in lowered for n in options)
        else:
            hit = any(n in data for n in options)
        if hit:
            found.append(form)
    return found


def scan_tree(root: Path, key: str) -> dict[str, list[str]]:
    """Every file under `root` (not following links) that holds the key in some form."""
    leaks: dict[str, list[str]] = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            if path.is_symlink() or not path.is_file():
                continue
            forms = find_key(path.read_bytes(), key)
            if forms:
                leaks[str(path.relative_to(root))] = forms
    return leaks


def test_the_scanner_finds_every_form_it_looks_for(tmp_path: Path) -> None:
    """The search below would be worthless if it could not see a planted key."""
    key = make_canary()
    plants = {
        "plain.txt": f"error: {key}".encode(),
        "bearer.log": f"Authorization: Bearer {key}\n".encode(),
        "b64.bin": b"x" + base64.b64encode(b"ab" + key.encode()) + b"y",
        "b64url.bin": base64.urlsafe_b64encode(b"Bearer " + key.encode()),
        "hex.txt": key.encode().hex().upper().encode(),
        "bearer-hex.txt": b"x" + (b"Bearer " + key.encode()).hex().encode() + b"y",
        "quoted.log": quote(key, safe="").lower().encode(),
        "quoted-plus.log": quote_plus(f"authorization: Bearer {key}").encode(),
        "every-byte.log": "".join(f"%{b:02X}" for b in key.encode()).encode(),
        "escaped.json": json.dumps({"e": key}).replace("/", "\\/").encode(),
        "utf16.db": b"\0\1" + key.encode("utf-16-le"),
        "nested/deeper/random.txt": key.removeprefix(PREFIX).encode(),
    }
    for name, data in plants.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    (tmp_path / "clean.txt").write_bytes(f"{PREFIX}{'0' * 32} Bearer x".encode())
    assert set(scan_tree(tmp_path, key)) == set(plants)


# -- whole campaigns through the CLI ---------------------------------------------------------

# Faults on every route: creates that may have been billed (5xx), 429s on creates and queries,
# generations that fail or are moderated, downloads that fail or are cut short.
FAULTS: dict[str, Any] = {
    "create": {
        "error_rate": 0.15,
        "error_status": 500,
        "rate_limit_rate": 0.15,
        "fail_rate": 0.3,
        "moderate_rate": 0.15,
    },
    "get": {"rate_limit_rate": 0.3},
    "list": {"error_rate": 0.3, "error_status": 500},
    "download": {"error_rate": 0.2, "error_status": 503, "truncate_rate": 0.1},
}
PROMPTS = [f"secret canary prompt {i}" for i in range(16)]


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimProcess]:
    (tmp_path / "sim").mkdir()
    config = {
        "duration_median": 0.2,
        "duration_sigma": 0.2,
        "faults": FAULTS,
        "echo_key": list(ECHO_ENCODINGS),
    }
    process = start_simulator(tmp_path / "sim", config)
    yield process
    stop_simulator(process)


def _cli(tmp_path: Path, env: dict[str, str], name: str, *args: str) -> tuple[int, str]:
    """Run one CLI command, keep its output as a log file under `tmp_path`, return both."""
    done = run_cli(*args, cwd=tmp_path, env=env, timeout=100)
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    (logs / f"{name}.stdout.log").write_text(done.stdout, encoding="utf-8")
    (logs / f"{name}.stderr.log").write_text(done.stderr, encoding="utf-8")
    return done.returncode, done.stdout + done.stderr


def _run_watching_the_database(
    tmp_path: Path, env: dict[str, str], jobfile: Path, key: str
) -> tuple[int, str, dict[str, Any]]:
    """`runner -v -v run` while its database is open: the -wal and -shm files exist only then
    (SQLite removes them at the last close), so they are read and checked as they are written.
    """
    logs = tmp_path / "logs"
    logs.mkdir(exist_ok=True)
    out_path, err_path = logs / "run1.stdout.log", logs / "run1.stderr.log"
    live: dict[str, Any] = {"-wal": 0, "-shm": 0, "leaks": [], "modes": set()}
    with out_path.open("w") as out, err_path.open("w") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "runner", "-v", "-v", "run", str(jobfile)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=err,
        )
        try:
            deadline = time.monotonic() + 100
            while process.poll() is None and time.monotonic() < deadline:
                for suffix in ("-wal", "-shm"):
                    path = tmp_path / f"runner.db{suffix}"
                    try:
                        data = path.read_bytes()
                        mode = stat.S_IMODE(path.stat().st_mode)
                    except FileNotFoundError:
                        continue
                    live[suffix] += 1
                    live["modes"].add(mode)
                    if find_key(data, key):
                        live["leaks"].append(suffix)
                time.sleep(0.05)
            code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    return code, out_path.read_text() + err_path.read_text(), live


@pytest.mark.slow
@pytest.mark.parametrize("style", ["bfl", "replicate"])
def test_a_campaign_with_failures_leaves_no_trace_of_the_key(
    sim: SimProcess, tmp_path: Path, style: str
) -> None:
    key = make_canary()
    env = runner_env(**{KEY_ENV: key})
    jobfile = write_jobfile(tmp_path, sim.url, PROMPTS, style=style, name="canary")
    outputs: dict[str, str] = {}

    code, outputs["run1"], live = _run_watching_the_database(tmp_path, env, jobfile, key)
    assert code in (0, 1), outputs["run1"][-3000:]
    assert live["-wal"] and live["-shm"], "never saw the database's -wal and -shm files"
    assert not live["leaks"], f"the key was in the live database files: {live['leaks']}"
    assert live["modes"] == {0o600}, f"live database files had modes {live['modes']}"
    code, outputs["status1"] = _cli(tmp_path, env, "status1", "status", "--json")
    assert code in (0, 1), outputs["status1"]
    retry = ("-v", "-v", "retry", "canary", "--state", "failed,moderated,expired", "--uncertain")
    code, outputs["retry"] = _cli(tmp_path, env, "retry", *retry)
    assert code == 0, outputs["retry"]
    code, outputs["run2"] = _cli(tmp_path, env, "run2", "-v", "-v", "run", str(jobfile))
    assert code in (0, 1), outputs["run2"][-3000:]
    code, outputs["cancel"] = _cli(tmp_path, env, "cancel", "-v", "-v", "cancel", "canary")
    assert code in (0, 1), outputs["cancel"]
    code, outputs["status2"] = _cli(tmp_path, env, "status2", "status", "--json")
    assert code in (0, 1), outputs["status2"]
    code, outputs["export"] = _cli(tmp_path, env, "export", "export", "canary", "-o", "m.jsonl")
    assert code == 0, outputs["export"]
    code, outputs["sidecars"] = _cli(tmp_path, env, "sidecars", "export", "canary", "--sidecars")
    assert code == 0, outputs["sidecars"]
    code, outputs["gallery"] = _cli(tmp_path, env, "gallery", "gallery", "canary", "-o", "g")
    assert code == 0, outputs["gallery"]
    code, outputs["jobs"] = _cli(tmp_path, env, "jobs", "jobs", "canary", "--json")
    assert code == 0, outputs["jobs"]

    # The key really was used, and the error paths really ran.
    stats = sim.stats()
    assert key in stats["credits_spent"], "the campaign did not use the canary key"
    assert stats["faults_injected"] > 0, stats
    assert any(int(code) >= 400 for code in stats["status_codes"]), stats["status_codes"]
    assert stats["downloads"] > 0 and stats["downloads_with_auth"] == 0
    rows = db_rows(tmp_path / "runner.db")
    assert len(rows) == len(PROMPTS)
    assert any(row["error"] for row in rows), "no job recorded an error: the faults did not bite"
    # the echoes reached the runner, which kept the answers' words and removed the key's forms
    assert any(REDACTED in (row["error"] or "") for row in rows), [r["error"] for r in rows]
    assert REDACTED in (tmp_path / "m.jsonl").read_text()
    assert list((tmp_path / "g").glob("*.html")), "the gallery wrote no page"
    assert " INFO " in outputs["run1"], "the log was not captured"
    status = json.loads((tmp_path / "logs" / "status2.stdout.log").read_text())
    assert status, outputs["status2"]

    # Not a trace of it anywhere: database, -wal, -shm, images, logs, job file, prompts.
    for name, text in outputs.items():
        assert not find_key(text.encode(), key), f"the key is in the output of {name}"
    assert (tmp_path / "runner.db").exists()
    assert scan_tree(tmp_path, key) == {}

    for suffix in ("", "-wal", "-shm", "-journal"):
        path = tmp_path / f"runner.db{suffix}"
        if path.exists():
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode == 0o600, f"{path.name} has mode {oct(mode)}, expected 0o600"


# -- the adapters' errors against a server that echoes the key -------------------------------


class _EchoHandler(BaseHTTPRequestHandler):
    """Answers every request the way `server.mode` says, copying the request's headers in."""

    protocol_version = "HTTP/1.1"
    server: _EchoServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self) -> None:
        self.server.seen.append(dict(self.headers.items()))
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        echo = "; ".join(f"{k}: {v}" for k, v in self.headers.items())
        auth = self.headers.get("authorization") or self.headers.get("x-key") or ""
        token = auth.removeprefix("Bearer ")
        mode = self.server.mode
        if mode == "hang-up":
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        if mode == "garbage":
            self.wfile.write(f"garbage {auth}\r\nX-Echo: {auth}\r\n\r\n".encode())
            self.close_connection = True
            return
        if mode == "slow":
            threading.Event().wait(1.5)
        status, body, ctype = self.BODIES[mode](echo, auth, token)
        data = body if isinstance(body, bytes) else body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Echo", auth)
        self.end_headers()
        # A client that refuses the answer from its headers (a file it will not take) may
        # hang up before the body: expected, and not worth a traceback in the test's output.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(data)

    do_GET = do_POST = _answer

    BODIES: ClassVar[dict[str, Any]] = {
        "401-detail": lambda e, a, t: (401, json.dumps({"detail": f"bad key {a}"}), "json"),
        "403-text": lambda e, a, t: (403, f"Forbidden. You sent {e}", "text/plain"),
        "422-bfl": lambda e, a, t: (
            422,
            json.dumps({"detail": [{"loc": ["body", t], "msg": f"no {t}", "type": "x"}]}),
            "application/json",
        ),
        "422-replicate": lambda e, a, t: (
            422,
            json.dumps(
                {
                    "title": f"Invalid {t}",
                    "detail": f"token {t} is not allowed",
                    "invalid_fields": [{"field": t, "description": e}],
                }
            ),
            "application/problem+json",
        ),
        "429-title": lambda e, a, t: (
            429,
            json.dumps({"title": f"slow down {a}", "retry_after": 1}),
            "application/json",
        ),
        "500-text": lambda e, a, t: (500, f"Internal error while handling {e}", "text/html"),
        "502-json-list": lambda e, a, t: (502, json.dumps([e, a]), "application/json"),
        "200-not-json": lambda e, a, t: (200, f"<html>{e}</html>", "text/html"),
        "200-not-a-prediction": lambda e, a, t: (
            200,
            json.dumps({"echo": e, "id": t}),
            "application/json",
        ),
        "200-failed-with-echo-replicate": lambda e, a, t: (
            200,
            json.dumps({"id": "p1", "status": "failed", "error": f"model error for {a}"}),
            "application/json",
        ),
        "200-failed-with-echo-bfl": lambda e, a, t: (
            200,
            json.dumps({"id": "p1", "status": "Error", "details": f"task error for {a}"}),
            "application/json",
        ),
        # JSON in UTF-16, which json reads as well as UTF-8: no byte of the key is in the body
        "200-failed-with-echo-utf16-replicate": lambda e, a, t: (
            200,
            json.dumps({"id": "p1", "status": "failed", "error": f"model error for {a}"}).encode(
                "utf-16"
            ),
            "application/json",
        ),
        "200-failed-with-echo-utf16-bfl": lambda e, a, t: (
            200,
            json.dumps({"id": "p1", "status": "Error", "details": f"task error for {a}"}).encode(
                "utf-16"
            ),
            "application/json",
        ),
        # "\/" for "/", as PHP's json_encode writes it: the key as sent is not in the body
        "200-failed-with-echo-escaped-replicate": lambda e, a, t: (
            200,
            json.dumps({"id": "p1", "status": "failed", "error": f"model error for {a}"}).replace(
                "/", "\\/"
            ),
            "application/json",
        ),
        "200-failed-with-echo-escaped-bfl": lambda e, a, t: (
            200,
            json.dumps({"id": "p1", "status": "Error", "details": f"task error for {a}"}).replace(
                "/", "\\/"
            ),
            "application/json",
        ),
        "slow": lambda e, a, t: (500, e, "text/plain"),
        # `GET /v1/account` (runner doctor prints the account's name), base64 of the header
        "200-account-echo": lambda e, a, t: (
            200,
            json.dumps({"username": "acct-" + base64.b64encode(a.encode()).decode()}),
            "application/json",
        ),
    }


class _EchoServer(ThreadingHTTPServer):
    daemon_threads = True
    mode = "500-text"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.seen: list[dict[str, str]] = []  # the headers of every request, as received


@pytest.fixture
def echo() -> Iterator[_EchoServer]:
    server = _EchoServer(("127.0.0.1", 0), _EchoHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def _everything_said_about(error: BaseException) -> str:
    """str, repr, args, fields and the whole chain of causes and contexts, as text."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        parts += [str(current), repr(current), repr(current.args), repr(vars(current))]
        parts += traceback.format_exception(current)
        current = current.__cause__ or current.__context__
    return "\n".join(parts)


ERROR_MODES = [
    "401-detail",
    "403-text",
    "422-bfl",
    "422-replicate",
    "429-title",
    "500-text",
    "502-json-list",
    "200-not-json",
    "200-not-a-prediction",
    "garbage",
    "hang-up",
    "slow",
]


@pytest.mark.parametrize("style", ["bfl", "replicate"])
@pytest.mark.parametrize("mode", ERROR_MODES)
def test_provider_errors_never_carry_the_key(echo: _EchoServer, style: str, mode: str) -> None:
    key = make_canary()
    auth = "x-key" if style == "bfl" else "bearer"
    base = f"http://127.0.0.1:{echo.server_address[1]}"
    config = ProviderConfig(style, style, base, auth, KEY_ENV)  # type: ignore[arg-type]
    echo.mode = mode
    model = "flux-pro-1.1" if style == "bfl" else "acme/model"

    async def calls() -> list[BaseException]:
        provider = make_provider(config, key, timeout=0.5)
        raised: list[BaseException] = []
        attempts = [
            provider.create(model, {"prompt": "p"}, deadline_seconds=None),
            provider.poll(Handle("p1", f"{base}/v1/get_result?id=p1")),
        ]
        if style == "replicate":
            attempts += [
                provider.cancel(Handle("p1")),
                provider.list_matching(model, {}, since=0.0),
                provider.webhook_secret(),  # type: ignore[attr-defined]
            ]
        try:
            for attempt in attempts:
                try:
                    with anyio.fail_after(10):
                        await attempt
                except Exception as exc:
                    raised.append(exc)
        finally:
            await provider.aclose()
        return raised

    raised = anyio.run(calls)
    assert raised, f"{mode}: no call failed"
    for error in raised:
        assert isinstance(error, ProviderError), f"{mode}: not classified: {error!r}"
        said = _everything_said_about(error)
        assert not find_key(said.encode(), key), f"{mode}: the key leaked into {said}"


@pytest.mark.parametrize("style", ["bfl", "replicate"])
@pytest.mark.parametrize("body", ["", "utf16-", "escaped-"])
def test_a_failed_generation_whose_error_echoes_the_key_does_not_carry_it(
    echo: _EchoServer, style: str, body: str
) -> None:
    """A 200 answer saying the generation failed: its error text goes into the database. In
    UTF-16, or with JSON's escaped slash, the body holds no byte string of the key as sent, yet
    its parsed text does."""
    key = make_canary()
    auth = "x-key" if style == "bfl" else "bearer"
    base = f"http://127.0.0.1:{echo.server_address[1]}"
    config = ProviderConfig(style, style, base, auth, KEY_ENV)  # type: ignore[arg-type]
    echo.mode = f"200-failed-with-echo-{body}{style}"

    async def poll() -> Any:
        provider = make_provider(config, key, timeout=5.0)
        try:
            return await provider.poll(Handle("p1", f"{base}/v1/get_result?id=p1"))
        finally:
            await provider.aclose()

    status = anyio.run(poll)
    assert status.error, status
    assert not find_key(repr(status).encode(), key), status
    assert REDACTED in status.error, status


# -- the simulator echoing the key, in each encoding, into every answer the runner reads ----


def _said(outcome: Any) -> str:
    if isinstance(outcome, BaseException):
        return _everything_said_about(outcome)
    return repr(outcome)


@pytest.mark.parametrize("encoding", ECHO_ENCODINGS)
@pytest.mark.parametrize("style", ["bfl", "replicate"])
def test_keys_echoed_in_any_encoding_reach_no_error_and_no_status(
    style: str, encoding: str
) -> None:
    """Over a socket, the simulator as a debugging proxy that echoes the Authorization or
    x-key value (and the header line, at each base64 alignment) in `encoding`: a refused key
    (401), a refused input (422), a throttled create (429), a server error (500), a failed
    generation read from a 200. Each must arrive with the provider's words and "[redacted]"
    where the key was."""
    key = make_canary()
    model = "flux-pro-1.1" if style == "bfl" else "acme/model"
    auth = "x-key" if style == "bfl" else "bearer"
    bad_input: dict[str, Any] = (
        {"prompt": "p", "width": 1000} if style == "bfl" else {"prompt": "p", "seed": "x"}
    )
    config = SimConfig(duration_median=0.0, duration_sigma=0.0, echo_key=encoding)

    wait = None if style == "bfl" else 5  # Replicate's create then answers with the failure

    async def calls(sim: SimHandle) -> list[Any]:
        settings = ProviderConfig(style, style, sim.url, auth, KEY_ENV, prefer_wait=wait)  # type: ignore[arg-type]
        provider = make_provider(settings, key, timeout=5.0)
        outcomes: list[Any] = []

        async def create(inputs: dict[str, Any], **faults: Any) -> Any:
            sim.sim.update_config({"faults": {"create": None}})  # one fault at a time
            sim.sim.update_config({"faults": {"create": faults}} if faults else {})
            try:
                with anyio.fail_after(10):
                    outcomes.append(await provider.create(model, inputs, deadline_seconds=None))
            except Exception as exc:
                outcomes.append(exc)
            return outcomes[-1]

        try:
            sim.sim.update_config({"api_keys": ["another-key-0000"]})
            await create({"prompt": "p"})
            sim.sim.update_config({"api_keys": None})
            await create(bad_input)
            await create({"prompt": "p"}, rate_limit_rate=1.0)
            await create({"prompt": "p"}, error_rate=1.0)
            made = await create({"prompt": "p"}, fail_rate=1.0)
            assert not isinstance(made, BaseException), _said(made)
            # BFL's create answers with an id: the failure comes with a poll
            outcomes[-1] = await provider.poll(made.handle) if style == "bfl" else made.status
        finally:
            await provider.aclose()
        return outcomes

    with running_in_thread(config=config) as sim:
        outcomes = anyio.run(calls, sim)
    assert len(outcomes) == 5
    for outcome in outcomes:
        said = _said(outcome)
        assert not find_key(said.encode(), key), f"{encoding}: the key leaked into {said}"
        assert REDACTED in said, f"{encoding}: no echo reached the runner: {said}"


def test_a_polling_url_on_another_port_of_the_api_host_never_gets_the_key(
    echo: _EchoServer,
) -> None:
    """A BFL polling_url naming the API's own address with another port (any local user's
    server could listen there) is not followed: the task is asked through the base URL."""
    key = make_canary()
    with running_in_thread(config=SimConfig(duration_median=0.0, duration_sigma=0.0)) as sim:
        config = ProviderConfig("bfl", "bfl", sim.url, "x-key", KEY_ENV)

        async def poll_elsewhere() -> Any:
            provider = make_provider(config, key, timeout=5.0)
            try:
                made = await provider.create("flux-dev", {"prompt": "p"}, deadline_seconds=None)
                task = made.handle.remote_id
                port = echo.server_address[1]
                elsewhere = f"http://127.0.0.1:{port}/eu2/v1/get_result?id={task}"
                return await provider.poll(Handle(task, elsewhere))
            finally:
                await provider.aclose()

        status = anyio.run(poll_elsewhere)
        polls = sim.sim.stats()["polls"]
    assert echo.seen == [], "the other port was asked, with the key"
    assert status.phase is Phase.SUCCEEDED and polls == 1


def test_doctor_prints_no_key_that_an_account_answer_echoes(
    echo: _EchoServer, tmp_path: Path
) -> None:
    key = make_canary()
    echo.mode = "200-account-echo"
    base = f"http://127.0.0.1:{echo.server_address[1]}"
    jobfile = write_jobfile(tmp_path, base, PROMPTS, style="replicate", name="doctor")
    done = run_cli("doctor", str(jobfile), cwd=tmp_path, env=runner_env(**{KEY_ENV: key}))
    said = done.stdout + done.stderr
    assert "accepts the key" in said and f"(account acct-{REDACTED}" in said, said
    assert not find_key(said.encode(), key), said
    assert any(request.get("Authorization") == f"Bearer {key}" for request in echo.seen)


# -- the redaction itself ----------------------------------------------------------------------


def test_credentials_are_the_auth_headers_values_and_their_tokens() -> None:
    key = make_canary()
    bearer = httpx.Headers({"Authorization": f"Bearer {key}", "User-Agent": "runner"})
    assert credentials(bearer).values == (f"Bearer {key}", key)
    assert credentials(httpx.Headers({"x-key": key})).values == (key,)
    assert key not in repr(credentials(bearer))
    # Values too short to be keys are left alone: redacting "k" would garble every message.
    assert not credentials(httpx.Headers({"x-key": "k", "Authorization": "Bearer k"}))
    text = f"sent Bearer {key} and {key} and {key[:-1]}"
    assert redact(text, credentials(bearer)) == f"sent {REDACTED} and {REDACTED} and {key[:-1]}"


def test_a_long_error_text_is_redacted_before_it_is_cut_short() -> None:
    """An error body is kept to its first 300 characters: cut first, a key across the cut
    would have kept its first half, no longer a whole key to find."""
    key = make_canary()
    request = httpx.Request("POST", "http://127.0.0.1/v1/flux-dev", headers={"x-key": key})
    for start in range(270, 300):
        body = "e" * start + key + " and more words"
        response = httpx.Response(422, text=body, request=request)
        error = from_response(response, "create")
        kept = error.message[start:]
        assert not kept or kept.startswith(REDACTED[: len(kept)]), (start, error.message)
        assert error.message.startswith("e" * start)


def test_an_httpx_error_that_names_the_key_is_redacted() -> None:
    key = make_canary()
    request = httpx.Request("GET", "http://127.0.0.1/", headers={"x-key": key})
    for exc in (
        httpx.ConnectError(f"refused for {key}", request=request),
        httpx.ReadTimeout(f"no answer for {key}", request=request),
    ):
        error = from_exception(exc)
        assert not find_key(_everything_said_about(error).encode(), key), error
        assert REDACTED in str(error)
