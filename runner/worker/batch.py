"""Group commit: the state changes of many jobs, written in one transaction.

Every job persists before and after each remote call, so at hundreds of jobs a second one
transaction (and one trip to the database thread) per change is most of the work. Here the
first job to write finds nobody writing and becomes the writer; changes that arrive while it
writes wait, and the first of them then writes them all together, and so on. Every caller still
returns only once its own change is committed (or refused): persisting first is unchanged,
only the commits are shared.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import anyio

from runner.states import Change

Write = Callable[[Sequence[tuple[Change, bool]]], Awaitable[list[bool]]]


@dataclass
class _Pending:
    change: Change
    release: bool
    done: anyio.Event = field(default_factory=anyio.Event)
    ok: bool = False
    error: BaseException | None = None
    lead: bool = False  # woken to write the next batch rather than with its result


class GroupCommit:
    """`apply(change, release)` through `write`, which takes a batch and answers per change."""

    def __init__(self, write: Write) -> None:
        self._write = write
        self._pending: list[_Pending] = []
        self._writing = False
        self.batches = 0  # transactions written, for the tests and the curious

    async def apply(self, change: Change, release: bool) -> bool:
        # Shielded: a waiter cancelled before its turn to lead would leave the writer's role
        # with nobody, and a change once handed in is written whatever its caller does.
        with anyio.CancelScope(shield=True):
            ok = await self._apply(change, release)
        return ok

    async def _apply(self, change: Change, release: bool) -> bool:
        mine = _Pending(change, release)
        self._pending.append(mine)
        if self._writing:
            await mine.done.wait()
        else:
            self._writing = True
            mine.lead = True
        if mine.lead:  # write what is pending, this change among it, then hand over
            batch, self._pending = self._pending, []
            try:
                await self._commit(batch)
            finally:
                if self._pending:
                    self._pending[0].lead = True
                    self._pending[0].done.set()
                else:
                    self._writing = False
        if mine.error is not None:
            raise mine.error
        return mine.ok

    async def _commit(self, batch: list[_Pending]) -> None:
        try:
            oks = await self._write([(p.change, p.release) for p in batch])
        except Exception as error:  # every waiter of the batch hears of it, none hangs
            for pending in batch:
                pending.error = error
        else:
            self.batches += 1
            for pending, ok in zip(batch, oks, strict=True):
                pending.ok = ok
        finally:
            for pending in batch:
                pending.done.set()
