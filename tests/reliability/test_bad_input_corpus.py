"""Bad input gets a clear error and loses nothing: the corpus in bad_inputs/ through the CLI.

Every case of bad_inputs/cases.toml is refused by `load_jobfile`, by the CLI's `run --simulate`
and `submit` called in this process, and by the real `python -m runner` in a subprocess, against
a database that already holds a campaign of the same name. Each must exit with 2 and one
paragraph on stderr that names the file and the field or line, print no traceback, and leave the
database as it was: the same bytes on disk and the same rows in every table.

A subprocess costs a second or more of CPU just to import the runner, so each case gets one, and
the cases alternate between `run --simulate` and `submit`; two run at a time, ahead of their
tests, which keeps the module near a minute on two cores.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import tomllib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from runner.cli import cli
from runner.errors import InputError
from runner.jobfile import load_jobfile

CORPUS = Path(__file__).parent / "bad_inputs"
MANIFEST: dict[str, dict[str, Any]] = tomllib.loads((CORPUS / "cases.toml").read_text("utf-8"))
CAMPAIGN = "reliability"
HEAD = f"campaign: {CAMPAIGN}\nprovider: bfl\nmodel: flux-pro-1.1\n"
GOOD = HEAD + "prompts: [a lantern on a hill, a kite over the sea, a boat at dawn]\n"
HUGE_JOBFILE_BYTES = 50 * 1024 * 1024
HUGE_LINE_CHARS = 8_000_000
COMMANDS = ("run", "submit")
CLI_TIMEOUT = 60  # seconds for one command; a bad file is refused in about one
_SNAPSHOT_LOCK = threading.Lock()


# --- generators of the cases that are binary, huge or special files ------------------------------


def _jobfile_bad_utf8(folder: Path) -> None:
    # Latin-1 "é" (0xe9) on line 4, as an editor saving in the wrong encoding writes it.
    (folder / "jobfile_bad_utf8.yaml").write_bytes(
        HEAD.encode() + b"prompts: [a lantern in a caf\xe9]\n"
    )


def _jobfile_nul(folder: Path) -> None:
    (folder / "jobfile_nul.yaml").write_bytes(HEAD.encode() + b"prompts: [a lan\x00tern]\n")


def _jobfile_huge(folder: Path) -> None:
    # Valid YAML all the way: only its size is wrong.
    line = b"  - a lantern on a hill at dusk, watercolour, number 0000000\n"
    with (folder / "jobfile_huge.yaml").open("wb") as handle:
        handle.write(HEAD.encode() + b"prompts:\n")
        handle.write(line * (HUGE_JOBFILE_BYTES // len(line) + 1))


def _prompts_bad_utf8(folder: Path) -> None:
    (folder / "prompts" / "latin1.txt").write_bytes(b"a lantern\na caf\xe9 at night\n")


def _prompts_nul(folder: Path) -> None:
    (folder / "prompts" / "nul.txt").write_bytes(b"a lantern\na kite\nan ow\x00l\n")


def _prompts_huge_line(folder: Path) -> None:
    # A file that lost its line breaks: one line of 8,000,000 characters.
    text = "a lantern\n" + "kite" * (HUGE_LINE_CHARS // 4) + "\na boat\n"
    (folder / "prompts" / "huge_line.txt").write_text(text, encoding="utf-8")


def _prompts_path_symlink(folder: Path) -> None:
    (folder / "prompts" / "linked.txt").symlink_to(folder.parent / "outside.txt")


def _prompts_path_directory(folder: Path) -> None:
    (folder / "prompts" / "folder.txt").mkdir()
    (folder / "prompts" / "folder.txt" / "inner.txt").write_text("a lantern\n")


def _prompts_path_fifo(folder: Path) -> None:
    os.mkfifo(folder / "prompts" / "pipe.txt")


def _images_symlink_loop(folder: Path) -> None:
    (folder / "photos_loop").mkdir()
    (folder / "photos_loop" / "a.png").symlink_to("b.png")
    (folder / "photos_loop" / "b.png").symlink_to("a.png")


GENERATORS: dict[str, Callable[[Path], None]] = {
    "jobfile_bad_utf8": _jobfile_bad_utf8,
    "jobfile_nul": _jobfile_nul,
    "jobfile_huge": _jobfile_huge,
    "prompts_bad_utf8": _prompts_bad_utf8,
    "prompts_nul": _prompts_nul,
    "prompts_huge_line": _prompts_huge_line,
    "prompts_path_symlink": _prompts_path_symlink,
    "prompts_path_directory": _prompts_path_directory,
    "prompts_path_fifo": _prompts_path_fifo,
    "images_symlink_loop": _images_symlink_loop,
}


def _available(case: str) -> bool:
    needs = MANIFEST[case].get("needs")
    return needs is None or hasattr(os, needs)


CASES = [
    pytest.param(case, marks=[] if _available(case) else [pytest.mark.skip(reason="no os support")])
    for case in sorted(MANIFEST)
]


# --- the database and its fingerprint -----------------------------------------------------------


def runner_env() -> dict[str, str]:
    """The environment without the runner's own variables (a stray RUNNER_DB would redirect)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def table_rows(db: Path) -> str:
    """sha256 of the schema and of every table's rows, sorted: what the database holds.

    Robust where file bytes are not: a WAL checkpoint rewrites pages without changing a row.
    """
    digest = hashlib.sha256()
    # immutable: reading must not make -wal or -shm files, which the byte check would see.
    with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?immutable=1", uri=True)) as conn:
        schema = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY type, name")
        tables = []
        for kind, name, sql in schema.fetchall():
            digest.update(repr((kind, name, sql)).encode())
            if kind == "table":
                tables.append(name)
        for name in tables:
            rows = conn.execute(f'SELECT * FROM "{name}"').fetchall()
            digest.update(f"{name}:{len(rows)}".encode())
            for row in sorted(repr(row) for row in rows):
                digest.update(row.encode())
    return digest.hexdigest()


def file_bytes(folder: Path) -> dict[str, str]:
    """sha256 of each file in the database's folder (the database, its -wal and -shm)."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.iterdir())
        if path.is_file()
    }


@dataclass(frozen=True)
class Setup:
    cases: Path  # a copy of bad_inputs with the generated files; the commands run here
    db: Path  # holds the campaign CAMPAIGN, made by `runner submit` from GOOD
    rows: int  # jobs in it


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("corpus")
    # A real prompts file just outside the cases' folder, so "escapes" is not "missing".
    (root / "outside.txt").write_text("a prompt from outside the job file's folder\n")
    cases = root / "cases"
    shutil.copytree(CORPUS, cases, symlinks=True)
    for case in sorted(MANIFEST):
        generate = MANIFEST[case].get("generate")
        if generate is not None and _available(case):
            GENERATORS[generate](cases)

    db_dir = root / "db"
    db_dir.mkdir()
    (db_dir / "good.yaml").write_text(GOOD)
    db = db_dir / "runner.db"
    done = subprocess.run(
        [sys.executable, "-m", "runner", "submit", "good.yaml", "--db", str(db)],
        cwd=db_dir,
        env=runner_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    with contextlib.closing(sqlite3.connect(db)) as conn:
        rows = conn.execute("SELECT count(*) FROM jobs").fetchone()[0]
    assert rows == 3
    yield Setup(cases=cases, db=db, rows=rows)
    # pytest keeps the last runs' folders: not 50 MB each.
    for big in ("jobfile_huge.yaml", "prompts/huge_line.txt"):
        (cases / big).unlink(missing_ok=True)


# --- the tests ------------------------------------------------------------------------------------


def test_manifest_matches_the_files() -> None:
    """Every committed job file is a case, and every case has a job file or a generator."""
    committed = {path.stem for path in CORPUS.glob("*.yaml")}
    generated = {case for case, spec in MANIFEST.items() if "generate" in spec}
    assert committed - set(MANIFEST) == set(), "job files without a case in cases.toml"
    assert set(MANIFEST) - committed - generated == set(), "cases without a job file"
    assert {spec["generate"] for spec in MANIFEST.values() if "generate" in spec} <= set(GENERATORS)
    assert len(MANIFEST) >= 40
    for case, spec in MANIFEST.items():
        assert spec.get("expect"), f"{case} expects nothing"


def _check_message(message: str, case: str) -> None:
    job_file = f"{case}.yaml"
    assert message, "no message"
    assert "\n\n" not in message and "Traceback" not in message, message
    assert job_file in message, f"the message does not name {job_file}: {message}"
    for fragment in MANIFEST[case]["expect"]:
        assert fragment in message, f"{fragment!r} missing from: {message}"


@pytest.mark.parametrize("case", CASES)
def test_loader_refuses_with_one_paragraph(setup: Setup, case: str) -> None:
    with pytest.raises(InputError) as caught:
        load_jobfile(setup.cases / f"{case}.yaml")
    _check_message(str(caught.value), case)


def _snapshot(setup: Setup) -> tuple[str, dict[str, str], list[str]]:
    with _SNAPSHOT_LOCK:  # two cases run at once: never one's reading inside the other's
        return (
            table_rows(setup.db),
            file_bytes(setup.db.parent),
            sorted(str(p.relative_to(setup.cases)) for p in setup.cases.rglob("*")),
        )


@dataclass(frozen=True)
class Outcome:
    command: list[str]
    code: int | None
    stdout: str
    stderr: str
    before: tuple[str, dict[str, str], list[str]]
    after: tuple[str, dict[str, str], list[str]]


def _run_cli(setup: Setup, case: str, command: str) -> Outcome:
    args = [command, f"{case}.yaml", "--db", str(setup.db)]
    if command == "run":
        args.append("--simulate")
    before = _snapshot(setup)
    process = subprocess.Popen(
        [sys.executable, "-m", "runner", *args],
        cwd=setup.cases,
        env=runner_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=CLI_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        stderr += f"\n(killed after {CLI_TIMEOUT}s)"
    return Outcome(args, process.returncode, stdout, stderr, before, _snapshot(setup))


# One subprocess per case, alternating the command, so both go through a real process.
CLI_CASES = [
    pytest.param(param.values[0], COMMANDS[i % 2], marks=param.marks)
    for i, param in enumerate(CASES)
]


@pytest.fixture(scope="module")
def outcomes(
    setup: Setup, request: pytest.FixtureRequest
) -> Iterator[dict[tuple[str, str], Future[Outcome]]]:
    """Each selected case's command run as a subprocess, two at a time, ahead of its test.

    Tests run in the order they were submitted, so each mostly finds its outcome ready.
    """
    wanted = [
        (item.callspec.params["case"], item.callspec.params["command"])
        for item in request.session.items
        if getattr(item, "originalname", "") == "test_cli_exits_2_and_changes_nothing"
        and _available(item.callspec.params["case"])
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {key: pool.submit(_run_cli, setup, *key) for key in wanted}
        yield futures
        for future in futures.values():
            future.cancel()


@pytest.mark.parametrize(("case", "command"), CLI_CASES)
def test_cli_exits_2_and_changes_nothing(
    outcomes: dict[tuple[str, str], Future[Outcome]], case: str, command: str
) -> None:
    outcome = outcomes[case, command].result(timeout=2 * CLI_TIMEOUT)
    shown = (
        f"runner {' '.join(outcome.command)}: exit {outcome.code}\n"
        f"stdout: {outcome.stdout}\nstderr: {outcome.stderr}"
    )
    rows, files, listing = outcome.after
    assert files == outcome.before[1], "the database files changed\n" + shown
    assert rows == outcome.before[0], "the database's rows changed\n" + shown
    assert listing == outcome.before[2], "files were made beside the job file\n" + shown
    assert outcome.code == 2, shown
    assert "Traceback" not in outcome.stdout and not outcome.stdout.strip(), shown
    message = outcome.stderr.strip()
    assert message.startswith("error: "), shown
    _check_message(message, case)


@pytest.fixture
def keep_logging() -> Iterator[None]:
    """The CLI configures the "runner" and "httpx" loggers; put them back as they were."""
    loggers = [logging.getLogger(name) for name in ("runner", "httpx")]
    saved = [(logger, list(logger.handlers), logger.level, logger.propagate) for logger in loggers]
    yield
    for logger, handlers, level, propagate in saved:
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


@pytest.mark.usefixtures("keep_logging")
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("command", COMMANDS)
def test_cli_in_process(
    setup: Setup, case: str, command: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same through the CLI's own entry point in this process: quick, and every command."""
    monkeypatch.chdir(setup.cases)
    for name in [k for k in os.environ if k.startswith("RUNNER_")]:
        monkeypatch.delenv(name)
    args = [command, f"{case}.yaml", "--db", str(setup.db)]
    if command == "run":
        args.append("--simulate")
    before = _snapshot(setup)
    result = CliRunner().invoke(cli, args)
    assert _snapshot(setup) == before
    assert result.exit_code == 2, (result.output, result.exception)
    assert not result.stdout.strip()
    message = result.stderr.strip()
    assert message.startswith("error: "), message
    _check_message(message, case)


# --- more bad inputs, in-process only (each costs nothing to check) ------------------------------


def _sparse_prompts_file(folder: Path) -> str:
    with (folder / "big.txt").open("wb") as handle:
        handle.truncate(300 * 1024 * 1024)  # sparse: 300 MiB on paper, nothing on disk
    return HEAD + "prompts_file: big.txt\n"


def _utf16_prompts_file(folder: Path) -> str:
    (folder / "wide.txt").write_bytes("a fox\na kite\n".encode("utf-16"))
    return HEAD + "prompts_file: wide.txt\n"


def _fifo_job_file(folder: Path) -> str:
    os.mkfifo(folder / "jobs.yaml")
    return ""


MORE: dict[str, tuple[Callable[[Path], str], list[str]]] = {
    "output dir with NUL": (
        lambda _: HEAD + 'prompts: [a]\noutput: {dir: "out\\0x"}\n',
        ["line 5", "`output.dir`", "NUL"],
    ),
    "number of 5000 digits": (
        lambda _: HEAD + "prompts: [a]\ninput: {seed: 1" + "0" * 5000 + "}\n",
        ["a number has more than", "Quote it"],
    ),
    "nesting too deep": (
        lambda _: HEAD + "prompts: [a]\ninput: {x: " + "[" * 1500 + "]" * 1500 + "}\n",
        ["nested too deeply"],
    ),
    "key that is not text": (lambda _: HEAD + "prompts: [a]\n~: 3\n", ["line 5", "key None"]),
    "control character in a prompt": (
        lambda _: HEAD + 'prompts: ["a \\e[31mred\\e[0m kite"]\n',
        ["line 4", "`prompts[0]`", "U+001B"],
    ),
    "prompts file of 300 MiB": (_sparse_prompts_file, ["`prompts_file`", "more than the 256.0"]),
    "prompts file in UTF-16": (_utf16_prompts_file, ["wide.txt", "line 1", "UTF-16"]),
    "job file that is a pipe": (_fifo_job_file, ["not a regular file"]),
}


@pytest.mark.parametrize("name", sorted(MORE))
def test_more_bad_inputs(tmp_path: Path, name: str) -> None:
    build, fragments = MORE[name]
    if name == "job file that is a pipe" and not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    text = build(tmp_path)
    path = tmp_path / "jobs.yaml"
    if text:
        path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as caught:
        load_jobfile(path)
    message = str(caught.value)
    assert "\n" not in message and "jobs.yaml" in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from: {message}"


def test_a_prompts_file_with_old_mac_line_ends_is_three_prompts(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_bytes(b"a fox\ra kite\ra boat\r")
    (tmp_path / "jobs.yaml").write_text(HEAD + "prompts_file: p.txt\n")
    campaign = load_jobfile(tmp_path / "jobs.yaml")
    assert [job.meta["prompt"] for job in campaign.jobs] == ["a fox", "a kite", "a boat"]
    assert [job.meta["source"] for job in campaign.jobs] == ["p.txt:1", "p.txt:2", "p.txt:3"]
