"""The arithmetic of file descriptors: what the worker keeps, what the receiver may have."""

from __future__ import annotations

import resource

import pytest

from runner import descriptors
from runner.descriptors import (
    BASE,
    CEILING,
    DATABASE,
    MAX_BACKLOG,
    MAX_CONNECTIONS,
    MIN_BACKLOG,
    MIN_CONNECTIONS,
    PER_DOWNLOAD,
    PROVIDER_CONNECTIONS,
    SIMULATOR_SENDER,
    Reserve,
    receiver_share,
    shortfall,
    wanted_soft,
)
from runner.worker.pool import PoolOptions

INFINITY = resource.RLIM_INFINITY


def test_the_reserve_counts_every_download_every_provider_pool_and_the_database() -> None:
    one = Reserve(downloads=128, provider_pools=1)
    assert one.total == 128 * 3 + 192 + 45 + 64 == 685
    assert (PER_DOWNLOAD, PROVIDER_CONNECTIONS, DATABASE, BASE) == (3, 192, 45, 64)
    # each campaign's provider has a pool of its own
    assert Reserve(downloads=128, provider_pools=3).total == one.total + 2 * 192
    assert Reserve(downloads=32, provider_pools=1).total == one.total - 96 * 3


def test_an_in_process_simulator_holds_the_other_end_of_every_connection() -> None:
    alone = Reserve(downloads=128, provider_pools=2)
    beside = Reserve(downloads=128, provider_pools=2, simulator=True)
    assert beside.total - alone.total == 2 * 192 + 128 + SIMULATOR_SENDER


def test_the_default_pool_and_the_factorys_pool_are_what_is_reserved() -> None:
    from runner.providers import factory

    assert PoolOptions().downloaders == 128
    assert factory.PROVIDER_CONNECTIONS is descriptors.PROVIDER_CONNECTIONS


@pytest.mark.parametrize(
    ("soft", "reserve", "connections", "backlog"),
    [
        (1024, 685, 255, 42),  # systemd's and most shells' default soft limit
        (4096, 685, MAX_CONNECTIONS, MAX_BACKLOG),  # room to spare: the caps
        (2048, 685, MAX_CONNECTIONS, MAX_BACKLOG),
        (800, 685, 87, 14),  # 115 spare: a backlog of 14, two of them set aside
        (700, 685, MIN_CONNECTIONS, MIN_BACKLOG),  # 15 spare: the floors
        (256, 685, MIN_CONNECTIONS, MIN_BACKLOG),  # macOS's default: less than the reserve
    ],
)
def test_the_receivers_share_is_what_the_reserve_leaves(
    soft: int, reserve: int, connections: int, backlog: int
) -> None:
    share = receiver_share(soft, reserve)
    assert (share.connections, share.backlog, share.spare) == (connections, backlog, soft - reserve)


def test_whenever_anything_is_spare_the_share_and_the_reserve_fit_under_the_limit() -> None:
    reserve = Reserve(downloads=128, provider_pools=1).total
    for soft in range(700, 5000, 7):  # one test: a sweep, not 600 test ids
        share = receiver_share(soft, reserve)
        if share.spare >= MIN_CONNECTIONS + 2 * MIN_BACKLOG:
            assert share.fits, soft
            assert reserve + share.connections + 2 * share.backlog <= soft, soft
        assert MIN_CONNECTIONS <= share.connections <= MAX_CONNECTIONS, soft
        assert MIN_BACKLOG <= share.backlog <= MAX_BACKLOG, soft


def test_no_limit_at_all_counts_as_the_ceiling() -> None:
    share = receiver_share(INFINITY, 685)
    assert share.spare == CEILING - 685
    assert (share.connections, share.backlog) == (MAX_CONNECTIONS, MAX_BACKLOG)


@pytest.mark.parametrize(
    ("soft", "hard", "wanted"),
    [
        (1024, 4096, 4096),
        (1024, 1024, 1024),  # nothing to gain
        (1024, 524_288, CEILING),  # systemd's hard limit: no more than is ever needed
        (256, INFINITY, CEILING),  # macOS: no hard limit
        (100_000, 200_000, 100_000),  # never lowered
        (INFINITY, INFINITY, INFINITY),
    ],
)
def test_the_soft_limit_asked_for(soft: int, hard: int, wanted: int) -> None:
    assert wanted_soft(soft, hard) == wanted


def test_a_limit_below_the_reserve_is_told_with_what_to_do() -> None:
    reserve = Reserve(downloads=128, provider_pools=1)
    assert shortfall(1024, reserve) is None
    assert shortfall(INFINITY, reserve) is None
    warning = shortfall(256, reserve)
    assert warning is not None
    assert "256" in warning and "685" in warning and "EMFILE" in warning
    assert "ulimit -n 685" in warning


def test_the_worker_gives_the_receiver_the_share_its_limit_leaves() -> None:
    from runner.app import _receiver_bounds
    from runner.bounded_http import Bounds

    assert _receiver_bounds(1024, 128, 1, False) == Bounds(connections=255, backlog=42)
    assert _receiver_bounds(4096, 128, 1, False) == Bounds(connections=512, backlog=128)
    # an in-process simulator's ends of the connections come out of the same limit
    assert _receiver_bounds(1024, 128, 1, True) == Bounds(connections=8, backlog=8)
