"""Group commit: many jobs' changes share transactions, and each caller still returns only
once its own change is written (or hears why not)."""

from __future__ import annotations

from collections.abc import Sequence

import anyio
import pytest

from runner.states import Change, State
from runner.worker.batch import GroupCommit


def change(job_id: int) -> Change:
    return Change(job_id, State.RUNNING, State.DOWNLOADING, {})


class Database:
    """Commits batches after a pause; refuses odd job ids (changed under us); can fail."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.committed: list[int] = []
        self.batches: list[list[int]] = []
        self.fail_on = fail_on

    async def write(self, changes: Sequence[tuple[Change, bool]]) -> list[bool]:
        ids = [c.job_id for c, _ in changes]
        await anyio.sleep(0.01)
        if self.fail_on in ids:
            raise OSError("disk I/O error")
        self.batches.append(ids)
        self.committed.extend(ids)
        return [i % 2 == 0 for i in ids]


def test_concurrent_changes_share_transactions_and_each_gets_its_own_answer() -> None:
    db = Database()
    commits = GroupCommit(db.write)
    answers: dict[int, bool] = {}

    async def one(i: int) -> None:
        answers[i] = await commits.apply(change(i), True)
        assert i in db.committed  # never back before its own change is written

    async def main() -> None:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                for i in range(100):
                    tg.start_soon(one, i)

    anyio.run(main)
    assert answers == {i: i % 2 == 0 for i in range(100)}
    assert sorted(db.committed) == list(range(100))  # each written exactly once
    assert commits.batches == len(db.batches) <= 3  # not 100 transactions


def test_a_failed_transaction_reaches_every_waiter_of_it_and_the_next_ones_go_on() -> None:
    db = Database(fail_on=0)
    commits = GroupCommit(db.write)
    outcomes: dict[int, str] = {}

    async def one(i: int) -> None:
        try:
            await commits.apply(change(i), True)
            outcomes[i] = "written"
        except OSError as error:
            outcomes[i] = str(error)

    async def main() -> None:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(one, 0)  # the first batch: job 0 alone, and it fails
                await anyio.sleep(0.001)
                for i in range(1, 20):
                    tg.start_soon(one, i)

    anyio.run(main)
    assert outcomes[0] == "disk I/O error"
    assert all(outcomes[i] == "written" for i in range(1, 20))
    assert sorted(db.committed) == list(range(1, 20))


def test_one_change_alone_is_written_at_once() -> None:
    db = Database()
    commits = GroupCommit(db.write)
    assert anyio.run(commits.apply, change(2), False) is True
    assert db.batches == [[2]]
    with pytest.raises(OSError):
        anyio.run(GroupCommit(Database(fail_on=4).write).apply, change(4), True)


def test_a_caller_cancelled_while_waiting_neither_loses_its_change_nor_stalls_the_rest() -> None:
    db = Database()
    commits = GroupCommit(db.write)
    later: list[bool] = []

    async def main() -> None:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(commits.apply, change(0), True)  # leads the first batch
                await anyio.sleep(0.001)
                with anyio.move_on_after(0.002):  # gives up while the first batch is written
                    await commits.apply(change(2), True)
                await anyio.sleep(0.05)
                later.append(await commits.apply(change(4), True))

    anyio.run(main)
    assert later == [True]  # the writer's role was handed on, not lost with the cancelled one
    assert db.committed == [0, 2, 4]  # the cancelled caller's change was still written
