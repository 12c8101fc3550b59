"""Every fault the simulator can inject, each against a small campaign run by the real worker.

Each case runs 8 jobs in this process (`runner.app.work`) against the simulator over real
sockets. The fault hits only the jobs whose prompt carries the marker `#f` (the fault's
`match`), at probability 1, and, for a transient fault, only a fixed number of `times` per
job: so what each job goes through is decided in advance, not by chance. Then every job must
have ended in the state the fault calls for, with the reason recorded, the jobs the fault
missed must be done, and the simulator's counters must show the fault was injected and that no
input was created more often than it may have been.

Clients time out after 1 s here (30 s and 60 s in real runs) so that stalls can outlast them.

The last test is a campaign of 1,000 jobs with every fault at a low rate.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import anyio
import pytest

from runner import app
from runner.campaign import Campaign, CampaignSettings, JobSpec, Limits, ProviderConfig
from runner.providers import factory
from runner.simulator import SimConfig, running_in_thread
from runner.simulator.state import canonical_json
from runner.states import SETTLED, Job, State
from runner.store import Store, open_store
from runner.worker import download
from runner.worker.pool import PoolOptions

MARK = "#f"
N_JOBS = 8
CLIENT_TIMEOUT = 1.0
STALL = 2.0  # seconds: past the client's timeout
KEY_ENV = "RUNNER_TEST_KEY"
UNCERTAIN_WHY = "may have been created and billed"

R, B = "replicate", "bfl"


@dataclass(frozen=True)
class Case:
    """One fault, on the jobs marked with `#f`, and what it must do to them."""

    id: str
    style: str
    faults: dict[str, dict[str, Any]]
    state: str  # where each job hit by the fault ends
    reason: str | None = None  # text its `error` must contain
    creates: int | None = 1  # creates of each hit job's input at the simulator
    injected: tuple[str, ...] = ()  # "route:kind" counters that must be > 0
    sim: dict[str, Any] = field(default_factory=dict)
    deadline: float | None = None
    check: Callable[[Run], None] | None = None


@dataclass
class Run:
    jobs: list[Job]
    stats: dict[str, Any]
    seconds: float
    out: Path

    def hit(self) -> list[Job]:
        return [j for j in self.jobs if MARK in j.input["prompt"]]

    def missed(self) -> list[Job]:
        return [j for j in self.jobs if MARK not in j.input["prompt"]]

    def creates(self, job: Job) -> int:
        return int(self.stats["creates_by_input"].get(canonical_json(job.input), 0))


def marked(route: str, **spec: Any) -> dict[str, dict[str, Any]]:
    return {route: {"match": MARK, **spec}}


def _refreshed(times: int) -> Callable[[Run], None]:
    def check(run: Run) -> None:
        assert all(j.url_refreshes == times for j in run.hit()), [
            j.url_refreshes for j in run.hit()
        ]

    return check


def _cancel_failed(run: Run) -> None:
    # the runner asked for every cancel; only the ones the fault missed got through
    by_id = {g["id"]: g for g in run.stats["generations"]}
    assert all(by_id[j.remote_id]["phase"] != "canceled" for j in run.hit())
    assert all(by_id[j.remote_id]["phase"] == "canceled" for j in run.missed())


def _both(
    name: str, faults: dict[str, dict[str, Any]], injected: tuple[str, ...], **kw: Any
) -> list[Case]:
    return [Case(f"{name}-{style}", style, faults, injected=injected, **kw) for style in (R, B)]


CASES: list[Case] = [
    # -- create: before the provider acted -------------------------------------------------
    # Replicate style lists the account's predictions, finds none, and submits again.
    Case(
        "create-5xx-replicate",
        R,
        marked("create", error_rate=1.0, error_status=503, times=2),
        "done",
        injected=("create:error",),
    ),
    # an outage: every attempt refused, each verified as never created, then given up
    Case(
        "create-5xx-always-replicate",
        R,
        marked("create", error_rate=1.0, error_status=503),
        "failed",
        "gave up after 5 attempts, none of them created",
        creates=0,
        injected=("create:error",),
    ),
    # BFL style cannot list: a create that may have been billed waits for the user.
    Case(
        "create-5xx-bfl",
        B,
        marked("create", error_rate=1.0, error_status=503),
        "uncertain",
        UNCERTAIN_WHY,
        creates=0,
        injected=("create:error",),
    ),
    *_both(
        "create-429",
        marked("create", rate_limit_rate=1.0, retry_after=0.1, times=2),
        ("create:rate_limit",),
        state="done",
    ),
    Case(
        "create-reset-before-replicate",
        R,
        marked("create", reset_rate=1.0, times=2),
        "done",
        injected=("create:reset",),
    ),
    Case(
        "create-reset-before-bfl",
        B,
        marked("create", reset_rate=1.0),
        "uncertain",
        UNCERTAIN_WHY,
        creates=0,
        injected=("create:reset",),
    ),
    Case(
        "create-stall-before-replicate",
        R,
        marked("create", slow_rate=1.0, slow_seconds=STALL, times=1),
        "done",
        injected=("create:slow",),
    ),
    Case(
        "create-stall-before-bfl",
        B,
        marked("create", slow_rate=1.0, slow_seconds=STALL),
        "uncertain",
        UNCERTAIN_WHY,
        creates=0,
        injected=("create:slow",),
    ),
    # -- create: after the provider acted (created and billed, the answer lost) -------------
    # Replicate style finds the prediction by listing and adopts it: exactly one create.
    *[
        Case(
            f"create-{name}-{style}",
            style,
            marked("create", **{f"{kind}_rate": 1.0}, slow_seconds=STALL, error_status=502),
            "done" if style == R else "uncertain",
            None if style == R else UNCERTAIN_WHY,
            injected=(f"create:{kind}",),
        )
        for name, kind in (
            ("reset-after", "reset_after_create"),
            ("cut-after", "drop_after_create"),
            ("5xx-after", "error_after_create"),
            ("stall-after", "slow_after_create"),
        )
        for style in (R, B)
    ],
    # -- create: what the prediction turns out to be -----------------------------------------
    Case(
        "request-moderated-replicate",
        R,
        marked("create", request_moderate_rate=1.0),
        "moderated",
        "NSFW",
        injected=("create:request_moderate",),
    ),
    Case(
        "request-moderated-bfl",
        B,
        marked("create", request_moderate_rate=1.0),
        "moderated",
        "Request Moderated",
        injected=("create:request_moderate",),
    ),
    Case(
        "content-moderated-replicate",
        R,
        marked("create", moderate_rate=1.0),
        "moderated",
        "NSFW",
        injected=("create:moderate",),
    ),
    Case(
        "content-moderated-bfl",
        B,
        marked("create", moderate_rate=1.0),
        "moderated",
        "Content Moderated",
        injected=("create:moderate",),
    ),
    Case(
        "generation-failed-replicate",
        R,
        marked("create", fail_rate=1.0),
        "failed",
        "Prediction failed",
        injected=("create:fail",),
    ),
    Case(
        "generation-failed-bfl",
        B,
        marked("create", fail_rate=1.0),
        "failed",
        "Error",
        injected=("create:fail",),
    ),
    Case(
        "aborted-replicate",
        R,
        marked("create", abort_rate=1.0),
        "canceled",
        "aborted by the provider",
        injected=("create:abort",),
    ),
    Case(
        "canceled-replicate",
        R,
        marked("create", cancel_rate=1.0),
        "canceled",
        "canceled",
        injected=("create:cancel",),
    ),
    # Replicate answers `data_removed: true`; BFL hands out a sample URL that already expired.
    Case(
        "outputs-expired-replicate",
        R,
        marked("create", expire_rate=1.0),
        "expired",
        "outputs removed by the provider",
        injected=("create:expire",),
    ),
    Case(
        "outputs-expired-bfl",
        B,
        marked("create", expire_rate=1.0),
        "expired",
        "HTTP 403",
        injected=("create:expire",),
    ),
    # -- get (polling): transient faults are retried ------------------------------------------
    *_both(
        "get-5xx",
        marked("get", error_rate=1.0, error_status=503, times=3),
        ("get:error",),
        state="done",
    ),
    *_both(
        "get-429",
        marked("get", rate_limit_rate=1.0, retry_after=0.1, times=3),
        ("get:rate_limit",),
        state="done",
    ),
    *_both("get-reset", marked("get", reset_rate=1.0, times=3), ("get:reset",), state="done"),
    *_both(
        "get-stall",
        marked("get", slow_rate=1.0, slow_seconds=STALL, times=2),
        ("get:slow",),
        state="done",
    ),
    # BFL `Task not found` (HTTP 200) and Replicate 404: asked again, then given up as lost.
    *_both(
        "get-not-found-twice",
        marked("get", not_found_rate=1.0, times=2),
        ("get:not_found",),
        state="done",
    ),
    *_both(
        "get-not-found-always",
        marked("get", not_found_rate=1.0),
        ("get:not_found",),
        state="failed",
        reason="lost",
    ),
    # -- list (Replicate reconciling a create whose answer was cut off) ------------------------
    *[
        Case(
            f"list-{name}-replicate",
            R,
            {**marked("create", drop_after_create_rate=1.0), "list": spec},
            "done",
            injected=(f"list:{kind}",),
        )
        for name, kind, spec in (
            ("5xx", "error", {"error_rate": 1.0, "error_status": 500, "times": 2}),
            ("429", "rate_limit", {"rate_limit_rate": 1.0, "retry_after": 0.1, "times": 2}),
            ("reset", "reset", {"reset_rate": 1.0, "times": 2}),
            ("stall", "slow", {"slow_rate": 1.0, "slow_seconds": STALL, "times": 1}),
        )
    ],
    Case(
        # a listing the provider refuses cannot tell: the user decides (a 5xx is retried
        # as long as a poll would be, 20 times)
        "list-refused-replicate",
        R,
        {
            **marked("create", drop_after_create_rate=1.0),
            "list": {"error_rate": 1.0, "error_status": 400},
        },
        "uncertain",
        "could not list the provider's predictions (HTTP 400",
        injected=("list:error",),
    ),
    # -- cancel (at the job's deadline): the job expires whether or not the cancel went through
    *[
        Case(
            f"cancel-{name}-replicate",
            R,
            marked("cancel", **spec),
            "expired",
            "deadline",
            injected=(f"cancel:{kind}",),
            sim={"duration_median": 30.0, "duration_sigma": 0.0},
            deadline=0.5,
            check=_cancel_failed,
        )
        for name, kind, spec in (
            ("5xx", "error", {"error_rate": 1.0, "error_status": 503}),
            ("429", "rate_limit", {"rate_limit_rate": 1.0, "retry_after": 0.1}),
            ("reset", "reset", {"reset_rate": 1.0}),
        )
    ],
    # -- download --------------------------------------------------------------------------
    *_both(
        "download-5xx",
        marked("download", error_rate=1.0, error_status=503, times=2),
        ("download:error",),
        state="done",
    ),
    Case(
        "download-5xx-always-replicate",
        R,
        marked("download", error_rate=1.0, error_status=503),
        "failed",
        "download failed 6 times: HTTP 503",
        injected=("download:error",),
    ),
    *_both(
        "download-429",
        marked("download", rate_limit_rate=1.0, retry_after=0.1, times=2),
        ("download:rate_limit",),
        state="done",
    ),
    *_both(
        "download-reset",
        marked("download", reset_rate=1.0, times=2),
        ("download:reset",),
        state="done",
    ),
    *_both(
        "download-stall",
        marked("download", slow_rate=1.0, slow_seconds=STALL, times=1),
        ("download:slow",),
        state="done",
    ),
    *_both(
        "download-truncated",
        marked("download", truncate_rate=1.0, times=2),
        ("download:truncate",),
        state="done",
    ),
    Case(
        "download-truncated-always-bfl",
        B,
        marked("download", truncate_rate=1.0),
        "failed",
        "download failed 6 times",
        injected=("download:truncate",),
    ),
    *_both(
        "download-not-image",
        marked("download", not_image_rate=1.0, times=2),
        ("download:not_image",),
        state="done",
    ),
    Case(
        "download-not-image-always-replicate",
        R,
        marked("download", not_image_rate=1.0),
        "failed",
        "not an image",
        injected=("download:not_image",),
    ),
    # the bytes are an image: the file is kept by its signature, whatever the label says
    *_both(
        "download-wrong-type",
        marked("download", wrong_type_rate=1.0),
        ("download:wrong_type",),
        state="done",
    ),
    *_both(
        "download-drip",
        marked("download", drip_rate=1.0, drip_seconds=0.5),
        ("download:drip",),
        state="done",
    ),
    # Replicate style reads the prediction again for fresh URLs (twice), BFL cannot.
    Case(
        "download-gone-twice-replicate",
        R,
        marked("download", gone_rate=1.0, gone_status=410, times=2),
        "done",
        injected=("download:gone",),
        check=_refreshed(2),
    ),
    Case(
        "download-gone-always-replicate",
        R,
        marked("download", gone_rate=1.0, gone_status=410),
        "expired",
        "HTTP 410",
        injected=("download:gone",),
        check=_refreshed(2),
    ),
    *[
        Case(
            f"download-gone-{status}-bfl",
            B,
            marked("download", gone_rate=1.0, gone_status=status),
            "expired",
            f"HTTP {status}",
            injected=("download:gone",),
        )
        for status in (404, 410)
    ],
]


def _settings(style: str, url: str, out: Path, deadline: float | None) -> CampaignSettings:
    provider = ProviderConfig(
        style, style, url, "x-key" if style == B else "bearer", KEY_ENV, prefer_wait=None
    )
    return CampaignSettings(
        name="faults",
        provider=provider,
        output_dir=str(out),
        filename_template="{index:05d}-{slug}.{ext}",
        deadline_seconds=deadline,
        limits=Limits(max_in_flight=64, creates_per_minute=60_000.0, max_attempts=5),
    )


def _jobs(style: str, n: int, marked_every: int) -> list[JobSpec]:
    model = "flux-pro-1.1" if style == B else "black-forest-labs/flux-schnell"
    jobs = []
    for i in range(n):
        prompt = f"fault probe {i}" + (f" {MARK}" if i % marked_every == 0 else "")
        meta = {"prompt": prompt, "slug": f"probe-{i}"}
        jobs.append(
            JobSpec(key=f"j{i}", index=i + 1, model=model, input={"prompt": prompt}, meta=meta)
        )
    return jobs


@pytest.fixture
def short_timeouts(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Clients that give up after CLIENT_TIMEOUT, so a stall can outlast them quickly."""
    monkeypatch.setenv(KEY_ENV, "fault-test-key")
    # runner.app imports these where it uses them: patched at their source.
    monkeypatch.setattr(
        factory, "make_provider", partial(factory.make_provider, timeout=CLIENT_TIMEOUT)
    )
    monkeypatch.setattr(download, "file_client", partial(download.file_client, CLIENT_TIMEOUT))
    yield


def run_campaign(
    tmp_path: Path,
    style: str,
    sim_config: SimConfig,
    *,
    n: int = N_JOBS,
    marked_every: int = 2,
    deadline: float | None = None,
    limit: float = 60.0,
) -> Run:
    out = tmp_path / "out"
    store: Store = open_store(str(tmp_path / "runner.db"))
    try:
        with running_in_thread(config=sim_config) as sim:
            settings = _settings(style, sim.url, out, deadline)
            store.enqueue(Campaign(settings=settings, jobs=_jobs(style, n, marked_every)))

            async def main() -> None:
                with anyio.fail_after(limit):
                    await app.work(
                        store,
                        ["faults"],
                        options=PoolOptions(tick=0.05),
                        handle_signals=False,
                        progress_every=0,
                    )

            started = time.monotonic()
            anyio.run(main)
            seconds = time.monotonic() - started
            stats = sim.sim.stats()
        return Run(list(store.jobs("faults")), stats, seconds, out)
    finally:
        store.close()


def check_files(run: Run) -> int:
    """Every done job's files are on disk, whole, and exactly what the simulator served."""
    served = run.stats["files"]
    checked = 0
    for job in run.jobs:
        if job.state is not State.DONE:
            continue
        assert job.files, job.key
        for record in job.files:
            data = Path(record["path"]).read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            assert digest == record["sha256"], job.key
            assert served[urlsplit(record["url"]).path] == digest, job.key
            checked += 1
    leftovers = (
        [p.name for p in run.out.iterdir() if p.name.startswith(".")] if run.out.exists() else []
    )
    assert not leftovers, f"temporary files left: {leftovers}"
    return checked


def sim_config(**values: Any) -> SimConfig:
    base: dict[str, Any] = {
        "seed": 7,
        "duration_median": 0.1,
        "duration_sigma": 0.2,
        "max_side": 32,
        "replicate_create_limit": None,
        "replicate_read_limit": None,
    }
    base.update(values)
    return SimConfig.from_dict(base)


@pytest.mark.usefixtures("short_timeouts")
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fault_ends_each_job_where_it_should(tmp_path: Path, case: Case) -> None:
    run = run_campaign(
        tmp_path,
        case.style,
        sim_config(faults=case.faults, **case.sim),
        deadline=case.deadline,
    )
    by_state = Counter(j.state.value for j in run.jobs)
    assert len(run.jobs) == N_JOBS
    assert all(j.state in SETTLED for j in run.jobs), by_state
    for label in case.injected:
        assert run.stats["faults"].get(label, 0) > 0, (label, run.stats["faults"])
    hit, missed = run.hit(), run.missed()
    assert hit and missed
    for job in hit:
        assert job.state.value == case.state, (job.key, job.state, job.error, dict(by_state))
        if case.reason is not None:
            assert job.error and case.reason in job.error, (job.key, job.error)
        if case.creates is not None:
            assert run.creates(job) == case.creates, (job.key, run.creates(job))
    for job in missed:
        expected = "expired" if case.deadline is not None else "done"
        assert job.state.value == expected, (job.key, job.state, job.error)
        assert run.creates(job) == 1
    # never more than one create for any input, whatever happened
    assert max(run.stats["creates_by_input"].values()) <= 1
    check_files(run)
    if case.check is not None:
        case.check(run)
    print(f"{case.id}: {dict(by_state)} in {run.seconds:.2f}s; faults {run.stats['faults']}")


# -- all faults at once, at low rates, on a large campaign -----------------------------------

MIXED_JOBS = 1000
# Transient faults hit a job at most `times` per route, so none can exhaust its retries by
# chance; the faults that decide a job's fate (moderation, failure, abort, cancel, expiry) hit
# a few percent of the predictions.
MIXED_FAULTS: dict[str, dict[str, Any]] = {
    "create": {
        "error_rate": 0.02,
        "error_status": 503,
        "rate_limit_rate": 0.02,
        "retry_after": 0.05,
        "reset_rate": 0.02,
        "drop_after_create_rate": 0.02,
        "error_after_create_rate": 0.02,
        "reset_after_create_rate": 0.02,
        "slow_after_create_rate": 0.01,
        "slow_rate": 0.01,
        "slow_seconds": STALL,
        "request_moderate_rate": 0.01,
        "moderate_rate": 0.01,
        "fail_rate": 0.01,
        "abort_rate": 0.01,
        "cancel_rate": 0.01,
        "expire_rate": 0.01,
        "times": 1,
    },
    "get": {
        "error_rate": 0.02,
        "error_status": 502,
        "rate_limit_rate": 0.02,
        "retry_after": 0.05,
        "reset_rate": 0.02,
        "not_found_rate": 0.02,
        "slow_rate": 0.01,  # about 10 expected; at 0.005 (about 5) a CI run met none
        "slow_seconds": STALL,
        "times": 2,
    },
    # a list request is about no job: `times` caps these faults for the whole run
    "list": {
        "error_rate": 0.03,
        "rate_limit_rate": 0.03,
        "retry_after": 0.05,
        "reset_rate": 0.03,
        "times": 40,
    },
    "download": {
        "error_rate": 0.02,
        "error_status": 503,
        "rate_limit_rate": 0.02,
        "retry_after": 0.05,
        "reset_rate": 0.02,
        "gone_rate": 0.02,
        "truncate_rate": 0.02,
        "not_image_rate": 0.02,
        "wrong_type_rate": 0.02,
        "drip_rate": 0.02,
        "drip_seconds": 0.3,
        "slow_rate": 0.01,  # about 10 expected; at 0.005 (about 5) a CI run met none
        "slow_seconds": STALL,
        "times": 2,
    },
}
# what a prediction's drawn outcome makes of its job (Replicate style)
FATE = {
    "request_moderated": "moderated",
    "moderated": "moderated",
    "failed": "failed",
    "aborted": "canceled",
    "canceled": "canceled",
}


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.usefixtures("short_timeouts")
def test_a_thousand_jobs_with_every_fault_at_low_rates(tmp_path: Path) -> None:
    run = run_campaign(
        tmp_path,
        R,
        sim_config(faults=MIXED_FAULTS, duration_median=0.2, duration_sigma=0.5),
        n=MIXED_JOBS,
        marked_every=MIXED_JOBS + 1,  # no job marked: the faults have no `match` here
        limit=150.0,
    )
    stats = run.stats
    by_state = Counter(j.state.value for j in run.jobs)
    assert len(run.jobs) == MIXED_JOBS
    assert all(j.state in SETTLED for j in run.jobs), by_state
    generations = {g["id"]: g for g in stats["generations"]}
    held = {j.remote_id for j in run.jobs}
    # A lost create's prediction whose data was removed (the expire fault) cannot be
    # recognised: every job whose lost create it might be is uncertain, never resent.
    unrecognisable = {
        g["id"] for g in stats["generations"] if g["id"] not in held and g["expired_early"]
    }
    wrong = []
    for job in run.jobs:
        generation = generations.get(job.remote_id or "")
        named = [rid for rid in unrecognisable if rid in (job.error or "")]
        if generation is None and named and job.state is State.UNCERTAIN:
            expected = "uncertain"
        elif generation is None:
            expected = "done"
        elif generation["expired_early"]:
            expected = "expired"
        else:
            expected = FATE.get(generation["outcome"], "done")
        if job.state.value != expected:
            wrong.append((job.key, job.state.value, expected, job.error))
        if job.state is not State.DONE:
            assert job.error, job.key
    assert not wrong, wrong[:10]
    assert max(stats["creates_by_input"].values()) == 1, "an input was created twice"
    # every job's input created once, but for the uncertain ones whose create never happened
    never = [j for j in run.jobs if j.state is State.UNCERTAIN and run.creates(j) == 0]
    assert sum(stats["creates_by_input"].values()) == MIXED_JOBS - len(never)
    files = check_files(run)
    faults = dict(sorted(stats["faults"].items()))
    print(
        f"\nmixed faults: {MIXED_JOBS} jobs in {run.seconds:.1f}s: {dict(by_state)}; "
        f"{files} files checked; creates {stats['creates']}, duplicates 0; "
        f"faults injected {stats['faults_injected']}: {json.dumps(faults)}"
    )
    assert stats["faults_injected"] > 100
    # every kind of fault in the mix was met at least once
    for route, spec in MIXED_FAULTS.items():
        for name, value in spec.items():
            if name.endswith("_rate") and value > 0:
                kind = "slow" if name == "slow_rate" else name.removesuffix("_rate")
                assert faults.get(f"{route}:{kind}", 0) > 0, (route, kind)
