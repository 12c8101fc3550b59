"""Webhooks end to end, over real sockets: the simulator signs and posts them, the worker's
receiver verifies them and makes the job due, and the worker's own poll confirms.

The runner polls a model from its learned generation times, so these tests first record a
history of slow generations of the same model in the database (as earlier runs would have
left): the first poll of each new job is then seconds away, which is where webhooks help.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import sqlalchemy as sa

from runner import app
from runner.campaign import ProviderConfig
from runner.simulator import SimConfig, running_in_thread
from runner.simulator.server import SimHandle
from runner.states import Job, State
from runner.store import Store, open_store
from runner.store.schema import jobs
from runner.webhooks import PATH, Receiver, WebhookOptions, secret_key, serve, sign
from runner.worker.pool import PoolOptions
from tests.factories import campaign, finished_history

KEY = "webhook-test-key"
MODEL = "black-forest-labs/flux-schnell"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(str(tmp_path / "runner.db"))
    yield s
    s.close()


def replicate(sim: SimHandle) -> ProviderConfig:
    return ProviderConfig("replicate", "replicate", sim.url, "bearer", "RUNNER_TEST_KEY")


def learned(store: Store, sim: SimHandle, seconds: float, n: int = 40) -> None:
    """A history of `n` finished generations of MODEL that took `seconds` each."""
    history = campaign(name="history", n=n, provider=replicate(sim), model=MODEL)
    finished_history(store, history, [seconds] * n)


def secret_of(sim: SimHandle, key: str = KEY) -> str:
    answer = httpx.get(
        f"{sim.url}/v1/webhooks/default/secret",
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
    )
    answer.raise_for_status()
    secret: str = answer.json()["key"]
    return secret


async def work(store: Store, webhooks: WebhookOptions | None) -> Any:
    return await app.work(
        store,
        ["c1"],
        options=PoolOptions(tick=0.05),
        handle_signals=False,
        progress_every=0,
        webhooks=webhooks,
    )


def job_of(store: Store, key: str = "k0") -> Job:
    return next(j for j in store.jobs("c1") if j.key == key)


# -- the store's side -----------------------------------------------------------------------


def test_a_hint_makes_only_that_running_job_due_and_changes_nothing_else(db_url: str) -> None:
    store = open_store(db_url)
    try:
        config = ProviderConfig("replicate", "replicate", "http://sim", "bearer", "K")
        store.enqueue(campaign(n=3, provider=config, model=MODEL))
        later = time.time() + 3600
        with store.write() as conn:
            for n, state in enumerate((State.RUNNING, State.RUNNING, State.DOWNLOADING)):
                conn.execute(
                    sa.update(jobs)
                    .where(jobs.c.key == f"k{n}")
                    .values(state=state.value, remote_id=f"p{n}", next_attempt_at=later)
                )
        before = {j.key: j for j in store.jobs("c1")}
        now = time.time()
        assert store.hint_due("p0", now)
        assert not store.hint_due("p0", now)  # already due: nothing to move
        assert not store.hint_due("p2", now)  # not running: a hint never touches it
        assert not store.hint_due("unknown", now)
        after = {j.key: j for j in store.jobs("c1")}
        assert after["k0"].next_attempt_at == pytest.approx(now)
        assert after["k0"].__dict__ == {**before["k0"].__dict__, "next_attempt_at": now}
        assert after["k1"] == before["k1"] and after["k2"] == before["k2"]
    finally:
        store.close()


# -- the simulator's side -------------------------------------------------------------------


def test_the_simulator_gives_each_key_its_own_secret_and_asks_for_the_key() -> None:
    # the secret route is not documented at the aggregators: this simulated one serves it
    with running_in_thread(config=SimConfig(aggregator_routes=["webhook_secret"])) as sim:
        first, again, other = secret_of(sim, "a-key"), secret_of(sim, "a-key"), secret_of(sim, "b")
        assert first == again != other
        assert len(secret_key(first)) == 24
        url = f"{sim.url}/v1/webhooks/default/secret"
        assert httpx.get(url, timeout=10).status_code == 401
        for prefix in ("", "/replicate"):  # Replicate and the aggregators' mirror
            answer = httpx.get(
                f"{sim.url}{prefix}/v1/webhooks/default/secret",
                headers={"Authorization": "Bearer a-key"},
                timeout=10,
            )
            assert answer.json() == {"key": first}


async def _receive(
    sim: SimHandle, creates: list[dict[str, Any]], expected: int, mode: str = "valid"
) -> tuple[Receiver, list[str]]:
    """Serve a receiver, create predictions asking for webhooks to it, and wait for the
    `expected` number of webhook requests."""
    sim.sim.update_config({"webhook_mode": mode})
    hinted: list[str] = []

    async def hint(prediction_id: str) -> bool:
        hinted.append(prediction_id)
        return True

    receiver = Receiver([secret_key(secret_of(sim))], hint)
    headers = {"Authorization": f"Bearer {KEY}"}
    async with anyio.create_task_group() as tg, httpx.AsyncClient(timeout=10) as client:
        url = await tg.start(serve, receiver.app, "127.0.0.1", 0)
        for body in creates:
            body = {**body, "webhook": url + PATH}
            answer = await client.post(f"{sim.url}/v1/predictions", json=body, headers=headers)
            assert answer.status_code == 201, answer.text
        with anyio.fail_after(10):
            while sim.sim.stats()["webhooks_sent"] < expected:
                await anyio.sleep(0.02)
        await anyio.sleep(0.3)  # and no more come
        tg.cancel_scope.cancel()
    return receiver, hinted


def test_the_simulator_signs_its_webhooks_as_replicate_does_and_respects_the_filter() -> None:
    config = SimConfig(duration_median=0.2, duration_sigma=0.1)
    with running_in_thread(config=config) as sim:
        only_completed = {"version": MODEL, "input": {"prompt": "a"}}
        only_completed["webhook_events_filter"] = ["completed"]
        every_event = {"version": MODEL, "input": {"prompt": "b"}}
        receiver, hinted = anyio.run(_receive, sim, [only_completed, every_event], 3)
        stats = sim.sim.stats()
        # 1 (completed) + 2 (start, completed); all verified, accepted once each
        assert stats["webhooks_sent"] == 3
        assert stats["webhook_answers"] == {"204": 3}
        assert receiver.stats.accepted == 3 and not receiver.stats.rejected
        # only the terminal events hint; both predictions' ids
        assert sorted(hinted) == sorted(g["id"] for g in stats["generations"])


@pytest.mark.parametrize(
    ("mode", "status", "reason"),
    [
        ("forged", "401", "no valid signature"),
        ("tampered", "401", "no valid signature"),
        ("stale", "401", "webhook-timestamp too far from now"),
        ("unsigned", "400", "missing webhook-signature"),
    ],
)
def test_spoiled_webhooks_from_the_simulator_are_refused(
    mode: str, status: str, reason: str
) -> None:
    config = SimConfig(duration_median=0.1, duration_sigma=0.1)
    with running_in_thread(config=config) as sim:
        body = {"version": MODEL, "input": {"prompt": "a"}, "webhook_events_filter": ["completed"]}
        receiver, hinted = anyio.run(_receive, sim, [body], 1, mode)
        assert hinted == []
        assert receiver.stats.accepted == 0
        assert receiver.stats.rejected == {reason: 1}
        assert sim.sim.stats()["webhook_answers"] == {status: 1}  # a 4xx is not retried


def test_a_replayed_webhook_from_the_simulator_is_acted_on_once() -> None:
    config = SimConfig(duration_median=0.1, duration_sigma=0.1)
    with running_in_thread(config=config) as sim:
        body = {"version": MODEL, "input": {"prompt": "a"}, "webhook_events_filter": ["completed"]}
        receiver, hinted = anyio.run(_receive, sim, [body], 2, "replay")
        assert len(hinted) == 1
        assert receiver.stats.rejected == {"replayed webhook-id": 1}
        assert sim.sim.stats()["webhook_answers"] == {"204": 1, "400": 1}


# -- the worker's side ----------------------------------------------------------------------


def _run_campaign(
    store: Store, tmp_path: Path, sim: SimHandle, webhooks: WebhookOptions | None, n: int
) -> dict[str, float]:
    learned(store, sim, seconds=4.0)
    store.enqueue(campaign(n=n, out=tmp_path / "out", provider=replicate(sim), model=MODEL))

    async def main() -> Any:
        with anyio.fail_after(60):
            return await work(store, webhooks)

    report = anyio.run(main)
    assert app.exit_code(store, ["c1"], report) == app.EXIT_OK
    stats = sim.sim.stats()
    ended = {g["id"]: g["completed_at"] for g in stats["generations"]}
    done = list(store.jobs("c1"))
    assert [j.state for j in done] == [State.DONE] * n
    delays = [j.ready_at - ended[j.remote_id] for j in done if j.ready_at and j.remote_id]
    return {
        "polls_per_job": stats["polls"] / n,
        "mean_delay": sum(delays) / n,
        "max_delay": max(delays),
        "webhooks": stats["webhooks_sent"],
    }


def test_webhooks_make_results_noticed_soon_after_they_are_ready(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Generations take about 1 s, the learned first poll comes at about 4 s. Without webhooks
    each result waits for that poll; with them it is polled as soon as it is ready."""
    monkeypatch.setenv("RUNNER_TEST_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    config = SimConfig(duration_median=1.0, duration_sigma=0.05)
    n = 6
    figures = {}
    for name, webhooks in (("polling", None), ("webhooks", WebhookOptions("127.0.0.1", 0))):
        folder = tmp_path / name
        folder.mkdir()
        with running_in_thread(config=config) as sim:
            store = open_store(str(folder / "runner.db"))
            try:
                figures[name] = _run_campaign(store, folder, sim, webhooks, n)
            finally:
                store.close()
            secret = secret_of(sim)
    with capsys.disabled():
        print(f"\nwebhook figures ({n} jobs, ~1 s generations, first poll at ~4 s): {figures}")
    polling, pushed = figures["polling"], figures["webhooks"]
    assert polling["webhooks"] == 0 and pushed["webhooks"] == n
    # one status query per job either way: the webhook replaces waiting, not the poll
    assert polling["polls_per_job"] == pytest.approx(1.0)
    assert pushed["polls_per_job"] == pytest.approx(1.0)
    assert polling["mean_delay"] > 2.0
    assert pushed["max_delay"] < 1.0 and pushed["mean_delay"] < 0.5
    # The secret is nowhere: not in the database files, not in the log.
    key = base64.b64encode(secret_key(secret)).decode()
    for path in (tmp_path / "webhooks").glob("runner.db*"):
        data = path.read_bytes()
        assert secret.encode() not in data and key.encode() not in data
    assert secret not in caplog.text and key not in caplog.text


def _signed(secret: str, body: bytes, *, stamp: int | None = None) -> dict[str, str]:
    msg_id = "msg_" + secrets.token_hex(8)
    stamp_text = str(int(time.time()) if stamp is None else stamp)
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": stamp_text,
        "webhook-signature": "v1," + sign(secret_key(secret), msg_id, stamp_text, body),
    }


def test_forged_and_replayed_webhooks_change_nothing(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The test posts webhooks itself to the URL the runner gave the provider: forged,
    unsigned, stale and tampered ones change nothing; a valid one makes the job polled once
    (and as the provider says it is still running, it stays running: a webhook only hints);
    the same request again changes nothing."""
    monkeypatch.setenv("RUNNER_TEST_KEY", KEY)
    # The generation takes long and the simulator sends no webhook of its own.
    config = SimConfig(duration_median=30.0, duration_sigma=0.01, webhook_mode="off")
    with running_in_thread(config=config) as sim:
        learned(store, sim, seconds=30.0)
        store.enqueue(campaign(n=1, out=tmp_path / "out", provider=replicate(sim), model=MODEL))
        secret = secret_of(sim)
        wrong = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()

        async def snapshot() -> tuple[float, int, State]:
            await anyio.sleep(0.4)  # time for the worker to act, if it were going to
            job = job_of(store)
            return job.next_attempt_at, sim.sim.stats()["polls"], job.state

        async def attack() -> None:
            while (job := job_of(store)).remote_id is None or job.state is not State.RUNNING:
                await anyio.sleep(0.02)
            prediction = sim.sim.find(job.remote_id)
            assert prediction is not None and prediction.webhook is not None
            assert prediction.webhook_events_filter == ["completed"]
            url = prediction.webhook
            body = json.dumps({"id": job.remote_id, "status": "succeeded"}).encode()
            before = await snapshot()
            assert before[0] > time.time() + 5  # the first poll is far away
            async with httpx.AsyncClient(timeout=10) as client:
                attempts = {
                    "forged": (_signed(wrong, body), body, 401),
                    "unsigned": ({"webhook-id": "msg_x", "webhook-timestamp": "1"}, body, 400),
                    "stale": (_signed(secret, body, stamp=int(time.time()) - 600), body, 401),
                    "tampered": (_signed(secret, body), body.replace(b"}", b" }"), 401),
                }
                for name, (headers, sent, status) in attempts.items():
                    answer = await client.post(url, content=sent, headers=headers)
                    assert answer.status_code == status, name
                assert await snapshot() == before

                valid = _signed(secret, body)
                assert (await client.post(url, content=body, headers=valid)).status_code == 204
                with anyio.fail_after(5):
                    while sim.sim.stats()["polls"] == before[1]:
                        await anyio.sleep(0.01)
                after = await snapshot()
                assert after[1] == before[1] + 1  # polled once
                assert after[2] is State.RUNNING  # the provider said "processing": no change
                assert after[0] > time.time() + 5  # and the next poll is far away again

                replay = await client.post(url, content=body, headers=valid)
                assert replay.status_code == 400
                assert await snapshot() == after

                # A valid webhook about a prediction nobody here knows changes nothing either.
                other = json.dumps({"id": "unknown0000", "status": "succeeded"}).encode()
                answer = await client.post(url, content=other, headers=_signed(secret, other))
                assert answer.status_code == 204
                assert await snapshot() == after

        async def main() -> None:
            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(work, store, WebhookOptions("127.0.0.1", 0))
                    await attack()
                    tg.cancel_scope.cancel()

        anyio.run(main)
        assert sim.sim.stats()["creates"] == 1
