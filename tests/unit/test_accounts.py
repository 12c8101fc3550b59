"""Campaigns on one provider account share one create rate: the strictest limit and burst of
them, over a minute that shrinks with the time scale like every other wait."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner import app
from runner.campaign import Limits
from runner.limits import WINDOW_MARGIN
from runner.store import open_store
from tests.factories import campaign


def test_campaigns_on_one_account_share_the_strictest_rate_and_burst(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNNER_TIME_SCALE", "0.2")
    store = open_store(str(tmp_path / "runner.db"))
    try:
        store.enqueue(campaign("a", limits=Limits(creates_per_minute=200, create_burst=200)))
        store.enqueue(campaign("b", limits=Limits(creates_per_minute=300, create_burst=50)))
        runtimes = app._runtimes(store, ["a", "b"], "http://127.0.0.1:9", None)
    finally:
        store.close()
    account = runtimes["a"].account
    assert runtimes["b"].account is account
    rate = account.bucket
    assert (rate.limit, rate.burst) == (200, 50)
    assert rate.window == pytest.approx(12.0 * (1 + WINDOW_MARGIN))  # a minute at scale 0.2
    assert rate.available(rate.updated) == 50
