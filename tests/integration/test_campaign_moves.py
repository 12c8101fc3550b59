"""The store continuing a campaign against real SQLite and PostgreSQL: a clashing job file is
refused inside the enqueue's transaction (nothing written), a move rewrites the queued jobs
and follows the created ones, a move is refused while a worker holds the campaign, and jobs
proven by their sidecars are recorded done."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace

import pytest
import sqlalchemy as sa

from runner.campaign import input_fingerprint
from runner.states import State
from runner.store import open_store
from runner.store.continuing import CampaignBusy, CampaignClash
from runner.store.schema import campaigns, jobs
from runner.store.store import Store
from tests.factories import BFL, campaign

OTHER = replace(BFL, api_key_env="BFL_OTHER_KEY")


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = open_store(db_url)
    yield s
    s.close()


def rows(store: Store) -> list[dict[str, object]]:
    with store.read() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(jobs).order_by(jobs.c.id))]


def settings_json(store: Store, name: str = "c1") -> dict[str, object]:
    with store.read() as conn:
        row = conn.execute(sa.select(campaigns.c.settings).where(campaigns.c.name == name)).one()
    return dict(row[0])


def set_state(store: Store, job_id: int, state: State, **values: object) -> None:
    with store.write() as conn:
        conn.execute(sa.update(jobs).where(jobs.c.id == job_id).values(state=state.value, **values))


def test_a_clash_is_refused_and_writes_nothing(store: Store) -> None:
    store.enqueue(campaign(n=3))
    before_rows, before_settings = rows(store), settings_json(store)
    for other in (campaign(n=4, provider=OTHER), campaign(n=4, model="flux-dev")):
        with pytest.raises(CampaignClash) as raised:
            store.enqueue(other)
        assert raised.value.queued == 3
        assert rows(store) == before_rows and settings_json(store) == before_settings
    assert store.clash_of(campaign(n=4, provider=OTHER)) is not None
    assert store.clash_of(campaign(n=4)) is None
    # the campaign's own file with more prompts and other limits goes on
    assert store.enqueue(campaign(n=5)).added == 2


def test_a_campaign_from_before_models_were_kept_is_compared_with_its_jobs(store: Store) -> None:
    store.enqueue(campaign(n=2))
    with store.write() as conn:  # as an older runner wrote it: no models in the settings
        settings = settings_json(store)
        settings.pop("models")
        conn.execute(sa.update(campaigns).values(settings=settings))
    with pytest.raises(CampaignClash):
        store.enqueue(campaign(n=2, model="flux-dev"))
    assert store.enqueue(campaign(n=2)).existing == 2
    assert settings_json(store)["models"] == ["flux-pro-1.1"]


def test_a_move_rewrites_the_queued_jobs_and_follows_the_created_ones(store: Store) -> None:
    store.enqueue(campaign(n=4))
    first, second, third, fourth = rows(store)
    set_state(store, int(first["id"]), State.RUNNING, remote_id="r1", submitted_at=1.0)
    set_state(store, int(second["id"]), State.DONE, remote_id="r2")
    moved_to = replace(OTHER, name="custom")
    result = store.enqueue(
        replace(campaign(n=3, provider=moved_to), jobs=campaign(n=4).jobs[1:3]),
        move_queued=True,
    )
    assert result.moved is not None
    assert (result.moved.followed, result.moved.updated, result.moved.withdrawn) == (1, 1, 1)
    after = {r["key"]: r for r in rows(store)}
    assert set(after) == {"k0", "k1", "k2"}  # k3 (queued, not in the file) withdrawn
    assert after["k0"]["state"] == State.RUNNING.value and after["k0"]["provider"] == "bfl"
    assert after["k1"]["state"] == State.DONE.value and after["k1"]["provider"] == "bfl"
    moved = after["k2"]
    assert moved["id"] == third["id"] and moved["provider"] == "custom"
    assert moved["input_hash"] == input_fingerprint(
        "custom", "flux-pro-1.1", {"prompt": "prompt 2"}
    )
    followed = store.followed("c1")
    assert [(f.provider.api_key_env, set(f.jobs)) for f in followed] == [
        ("BFL_API_KEY", {first["id"]})
    ]
    assert fourth["key"] == "k3"
    # the running job settles: the next enqueue stops following it
    set_state(store, int(first["id"]), State.DONE)
    store.enqueue(replace(campaign(n=3, provider=moved_to), jobs=campaign(n=4).jobs[1:3]))
    assert store.followed("c1") == []


def test_a_move_is_refused_while_a_worker_holds_the_campaign(store: Store) -> None:
    store.enqueue(campaign(n=2))
    now = time.time()
    store.register_worker("elsewhere:1:abc", "elsewhere", 1, ["c1"], now)
    with pytest.raises(CampaignBusy, match="elsewhere pid 1"):
        store.enqueue(campaign(n=2, provider=OTHER), move_queued=True, live_since=now - 60)
    # unseen for longer than a lease: gone, and its lease too
    store.enqueue(campaign(n=2, provider=OTHER), move_queued=True, live_since=now + 1)
    store.claim(State.QUEUED, ["c1"], owner="elsewhere:2:def", now=now, lease_seconds=60, limit=1)
    with pytest.raises(CampaignBusy, match="in the hands of worker elsewhere:2:def"):
        store.enqueue(campaign(n=2), move_queued=True, live_since=now + 1)


def test_jobs_proven_by_their_sidecars_are_recorded_done(store: Store) -> None:
    files = [{"path": "/out/1.png", "sha256": "ab", "bytes": 3, "url": None}]
    done = {
        "k1": {
            "remote_id": "r-1",
            "files": files,
            "created_at": 5.0,
            "submitted_at": 6.0,
            "ready_at": 9.0,
            "finished_at": 10.0,
        }
    }
    result = store.enqueue(campaign(n=3), recovered=done)
    assert result.recovered == 1 and result.added == 3
    by_key = {r["key"]: r for r in rows(store)}
    assert by_key["k1"]["state"] == State.DONE.value and by_key["k1"]["files"] == files
    assert by_key["k1"]["remote_id"] == "r-1" and by_key["k1"]["created_at"] == 5.0
    assert {by_key[k]["state"] for k in ("k0", "k2")} == {State.QUEUED.value}
    # a job that is no longer queued is left as it is
    set_state(store, int(by_key["k0"]["id"]), State.RUNNING, remote_id="r-0")
    again = store.enqueue(campaign(n=3), recovered={"k0": {**done["k1"], "remote_id": "x"}})
    assert again.recovered == 0
