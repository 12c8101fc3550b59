"""File descriptors: how many the worker keeps for its own work, and what the webhook receiver
may have.

A worker's descriptors go to its downloads (each a connection to the file host, its temporary
file, and for a moment the folder it fsyncs or the file it hashes), the providers' HTTP pools
(one per campaign), the database's connections and the process's own (standard streams, the
event loop's, listening sockets). The webhook receiver takes connections from anyone who can
reach it: it gets only what is left of the limit of open files after those, so that a flood of
connections to it makes a webhook wait, never a download fail with EMFILE (a result that
cannot be saved is racing its URL's lifetime).

Pure arithmetic, and one edge: `raise_soft_limit`, which asks the operating system for more.
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass

log = logging.getLogger("runner")

PER_DOWNLOAD = 3  # its connection, its temporary file, the folder fsynced or the file hashed
# Connections of one provider's HTTP pool (providers.factory builds them with this many): the
# worker's creates and queries at once, and some room.
PROVIDER_CONNECTIONS = 192
# SQLAlchemy's pool (5 connections and 10 more at a peak), three descriptors each on SQLite
# (the file, its WAL, its shared-memory index); PostgreSQL's one socket each is less.
DATABASE = 45
# The process's own: standard streams, the event loop's epoll and wake-up pipe, the signal
# pipe, listening sockets, log files, and what libraries open on import.
BASE = 64
# An in-process simulator's webhook sender opens at most this many connections (httpx's pool).
SIMULATOR_SENDER = 100
# Never ask for more than this: the worker needs a few thousand at most, and some libraries
# still walk every possible descriptor (closing them before an exec, for one).
CEILING = 65_536

# The receiver's share: connections it keeps open at once, and its listening backlog (the
# event loop accepts up to a backlog's worth of connections in one go, before the receiver can
# turn any away, and each one turned away holds its descriptor until the next turn of the
# loop: so two backlogs are counted beside the connections).
MAX_CONNECTIONS = 512
MAX_BACKLOG = 128
MIN_CONNECTIONS = 8  # even when nothing is spare: webhooks are only hints, polls go on
MIN_BACKLOG = 8


@dataclass(frozen=True)
class Reserve:
    """What the worker itself may hold open at once."""

    downloads: int  # PoolOptions.downloaders
    provider_pools: int  # one per campaign (each campaign's provider has its own client)
    simulator: bool = False  # an in-process simulator serves the other end of each of them

    @property
    def network(self) -> int:
        return self.provider_pools * PROVIDER_CONNECTIONS + self.downloads

    @property
    def total(self) -> int:
        own = self.downloads * PER_DOWNLOAD + self.provider_pools * PROVIDER_CONNECTIONS
        simulator = self.network + SIMULATOR_SENDER if self.simulator else 0
        return own + DATABASE + BASE + simulator


@dataclass(frozen=True)
class ReceiverShare:
    """The webhook receiver's limits, from the descriptors spare after the reserve."""

    connections: int
    backlog: int
    spare: int  # the limit less the reserve (negative: the reserve itself does not fit)

    @property
    def fits(self) -> bool:
        """Whether the reserve and this share both fit under the limit."""
        return self.spare >= self.connections + 2 * self.backlog


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def usable(soft: int) -> int:
    """A soft limit as a count (no limit at all counts as CEILING)."""
    return CEILING if soft == resource.RLIM_INFINITY else soft


def receiver_share(soft: int, reserve: int) -> ReceiverShare:
    """The receiver's connections and backlog under a soft limit of `soft` descriptors when
    the worker keeps `reserve` of them: a backlog of an eighth of what is spare, connections
    of what then remains (two backlogs set aside), each within its bounds."""
    spare = usable(soft) - reserve
    backlog = _clamp(spare // 8, MIN_BACKLOG, MAX_BACKLOG)
    connections = _clamp(spare - 2 * backlog, MIN_CONNECTIONS, MAX_CONNECTIONS)
    return ReceiverShare(connections, backlog, spare)


def wanted_soft(soft: int, hard: int) -> int:
    """The soft limit to ask for: the hard one, at most CEILING, never less than `soft`
    (`resource.RLIM_INFINITY` stands for no limit)."""
    infinite = resource.RLIM_INFINITY
    top = CEILING if hard == infinite else min(hard, CEILING)
    if soft == infinite:
        return soft
    return max(soft, top)


def shortfall(soft: int, reserve: Reserve) -> str | None:
    """A warning when the limit of open files cannot hold what the worker may open at once."""
    if soft == resource.RLIM_INFINITY or soft >= reserve.total:
        return None
    return (
        f"the limit of open files is {soft}, below the {reserve.total} this worker may need "
        f"at once ({reserve.downloads} downloads, {reserve.provider_pools} provider "
        "connection pool(s), the database): a save may fail with EMFILE, and new creates "
        f"then pause until it works. Raise it (`ulimit -n {reserve.total}` before the run, or "
        "the hard limit in /etc/security/limits.conf or the service's LimitNOFILE)"
    )


def raise_soft_limit() -> int:
    """Raise this process's soft limit of open files towards its hard limit (`wanted_soft`)
    where the system allows; the soft limit in force afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = wanted_soft(soft, hard)
    # Some systems refuse more than a limit of their own below the hard one (macOS's
    # kern.maxfilesperproc): halve the ask until it is granted or no better than now.
    while wanted > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            wanted //= 2
            continue
        log.debug("limit of open files raised from %d to %d (hard limit %d)", soft, wanted, hard)
        return wanted
    return soft
