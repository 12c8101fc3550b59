"""Budget guards: the decision before claiming creates, the cost estimate of --dry-run, the
figures the store reads for them, the job file's `budget` and `on_finish`, and on_finish hooks
that fail without stopping anything."""

from __future__ import annotations

import logging
import sys
import textwrap
from pathlib import Path

import pytest
import sqlalchemy as sa

from runner.budget import allowance, estimate_cost, per_job_cost, spent
from runner.campaign import Budget, CampaignSettings, OnFinish
from runner.errors import InputError
from runner.jobfile import load_jobfile
from runner.notify import run_hook
from runner.states import State
from runner.store import open_store
from runner.store.schema import jobs as jobs_table
from runner.store.store import Spend

pytestmark = pytest.mark.timeout(30)


# -- allowance ----------------------------------------------------------------------------------


def test_no_budget_means_no_limit() -> None:
    assert allowance("c", Budget(), Spend(known=1e9, unknown=5), 10_000, 50).room is None


def test_max_jobs_counts_creates_and_jobs_in_hand() -> None:
    budget = Budget(max_jobs=10)
    assert allowance("c", budget, None, 0, 0).room == 10
    assert allowance("c", budget, None, 6, 3).room == 1
    waiting = allowance("c", budget, None, 7, 3)  # the last 3 may still fail: wait, not pause
    assert waiting.room == 0 and waiting.paused is None


def test_max_jobs_reached_pauses_with_a_message() -> None:
    paused = allowance("nightly", Budget(max_jobs=500), None, 500, 0)
    assert paused.room == 0
    assert paused.paused is not None
    assert "campaign nightly reached its max_jobs of 500 for this run" in paused.paused
    assert "raise budget.max_jobs in the job file" in paused.paused


def test_max_cost_caps_the_claim_to_what_fits() -> None:
    budget = Budget(max_cost=1.0, price_per_image=0.1)
    # 0.3 reported, 2 in flight without a cost (0.2): 0.5 left, 5 more fit
    assert allowance("c", budget, Spend(known=0.3, unknown=2), 0, 0).room == 5
    # decimal sums: 0.1 * 10 is not exactly 1.0, yet exactly 10 jobs fit
    assert allowance("c", budget, Spend(), 0, 0).room == 10


def test_unknown_costs_count_at_the_last_reported_cost() -> None:
    spend = Spend(known=36.0, unknown=2, last_cost=4.0)  # 36 + 2 * 4 = 44
    assert spent(Budget(max_cost=50), spend) == 44.0
    assert allowance("c", Budget(max_cost=50), spend, 0, 0).room == 1
    # the configured price wins over the reported one
    assert per_job_cost(Budget(max_cost=50, price_per_image=1.0), spend) == 1.0


def test_max_cost_reached_pauses_with_the_amounts() -> None:
    spend = Spend(known=40.12, unknown=0, last_cost=0.04)
    paused = allowance("x", Budget(max_cost=40), spend, 0, 0)
    assert paused.room == 0
    assert paused.paused == (
        "campaign x reached its max_cost of 40.00 (spent 40.12): submissions paused; raise "
        "budget.max_cost in the job file and run again"
    )


def test_a_job_that_would_not_fit_pauses_too() -> None:
    paused = allowance("x", Budget(max_cost=10), Spend(known=8.0, last_cost=4.0), 0, 0)
    assert paused.paused is not None and "one more job costs about 4.00" in paused.paused


def test_without_any_known_cost_jobs_go_one_at_a_time() -> None:
    budget = Budget(max_cost=10)
    assert allowance("c", budget, Spend(), 0, 0).room == 1
    probing = allowance("c", budget, Spend(unknown=1), 0, 0)
    assert probing.room == 0 and probing.paused is None  # wait for its cost, never pause blind


def test_the_tighter_of_both_limits_wins() -> None:
    budget = Budget(max_jobs=3, max_cost=100, price_per_image=1.0)
    assert allowance("c", budget, Spend(), 0, 0).room == 3
    budget = Budget(max_jobs=30, max_cost=2.5, price_per_image=1.0)
    assert allowance("c", budget, Spend(), 0, 0).room == 2


# -- estimate -----------------------------------------------------------------------------------


def test_estimate_uses_the_price_else_the_average_per_model() -> None:
    assert estimate_cost({"a": 3, "b": 2}, 0.04, {}) == pytest.approx(0.2)
    assert estimate_cost({"a": 3, "b": 2}, None, {"a": 1.0, "b": 4.0}) == 11.0
    assert estimate_cost({"a": 3, "b": 2}, None, {"a": 1.0}) is None  # b unknown
    assert estimate_cost({"a": 3, "b": 0}, None, {"a": 1.0}) == 3.0  # no new b: no matter


# -- the store's figures ------------------------------------------------------------------------


def test_store_spend_counts_reported_and_billed_unknown_costs(tmp_path: Path) -> None:
    job_file = tmp_path / "j.yaml"
    job_file.write_text(
        "campaign: c\nprovider: bfl\nmodel: flux-dev\nprompts: [a, b, c, d, e]\n"
        "budget: {max_cost: 10}\n"
    )
    store = open_store(str(tmp_path / "runner.db"))
    store.enqueue(load_jobfile(job_file))
    jobs = list(store.jobs("c"))

    def move(i: int, to: State, **values: object) -> None:
        with store.write() as conn:
            stmt = sa.update(jobs_table).where(jobs_table.c.id == jobs[i].id)
            conn.execute(stmt.values(state=to.value, **values))

    move(0, State.DONE, cost=2.0)
    move(1, State.RUNNING, cost=3.0)
    move(2, State.RUNNING)  # created, its cost not reported
    move(3, State.FAILED)  # refused at create: not billed
    spend = store.spend("c", now=0.0)
    assert spend.known == 5.0 and spend.unknown == 1 and spend.last_cost in (2.0, 3.0)
    assert store.average_done_cost(["flux-dev", "other"]) == {"flux-dev": 2.0}
    assert CampaignSettings.from_dict(store.settings("c").to_dict()).budget.max_cost == 10


# -- the job file ---------------------------------------------------------------------------------


def _load(tmp_path: Path, extra: str, provider: str = "bfl", model: str = "flux-dev") -> object:
    path = tmp_path / "jobs.yaml"
    head = f"campaign: c\nprovider: {provider}\nmodel: {model}\nprompts: [a]\n"
    path.write_text(head + textwrap.dedent(extra))
    return load_jobfile(path).settings


def test_budget_and_on_finish_are_read(tmp_path: Path) -> None:
    settings = _load(
        tmp_path,
        "budget: {max_jobs: 500, max_cost: 40, price_per_image: 0.04}\n"
        "on_finish: {command: 'notify-send \"all done\"'}\n",
    )
    assert isinstance(settings, CampaignSettings)
    assert settings.budget == Budget(max_jobs=500, max_cost=40.0, price_per_image=0.04)
    assert settings.on_finish == OnFinish(command='notify-send "all done"')
    assert CampaignSettings.from_dict(settings.to_dict()) == settings


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "budget: {max_job: 5}\n",
            "line 5, field `budget.max_job`: unknown field 'max_job'. Did you mean `max_jobs`?",
        ),
        ("budget: {max_jobs: 0}\n", "field `budget.max_jobs`: found 0"),
        ("budget: {max_jobs: '5'}\n", "expected a whole number greater than 0"),
        ("budget: {max_cost: -1}\n", "field `budget.max_cost`: found -1"),
        ("budget: {price_per_image: .nan}\n", "field `budget.price_per_image`"),
        ("on_finish: {command: a, url: 'http://x'}\n", "exactly one of `command` and `url`"),
        ("on_finish: {}\n", "and has neither"),
        ("on_finish: {url: 'ftp://x'}\n", "field `on_finish.url`: found 'ftp://x'"),
        ("on_finish: {command: 'say \"hi'}\n", "cannot be split into words"),
        ("on_finish: {cmd: x}\n", "Did you mean `command`?"),
    ],
)
def test_bad_budget_and_on_finish_name_the_file_and_field(
    tmp_path: Path, extra: str, expected: str
) -> None:
    with pytest.raises(InputError) as caught:
        _load(tmp_path, extra)
    message = str(caught.value)
    assert message.startswith(str(tmp_path / "jobs.yaml")) and expected in message
    assert "\n" not in message


def test_max_cost_needs_a_price_where_the_api_reports_no_cost(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="Add `price_per_image`"):
        _load(tmp_path, "budget: {max_cost: 5}\n", provider="replicate", model="a/b")
    settings = _load(
        tmp_path,
        "budget: {max_cost: 5, price_per_image: 0.003}\n",
        provider="replicate",
        model="a/b",
    )
    assert isinstance(settings, CampaignSettings) and settings.budget.max_cost == 5


# -- failing hooks --------------------------------------------------------------------------------


def test_a_failing_hook_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "runner.notify")
    assert not run_hook(OnFinish(command="/nonexistent/hook"), {"campaign": "c"})
    failing = f"{sys.executable} -c 'import sys; sys.exit(\"boom\")'"
    assert not run_hook(OnFinish(command=failing), {"campaign": "c"})
    assert not run_hook(OnFinish(url="http://127.0.0.1:9/hook"), {"campaign": "c"})
    text = caplog.text
    assert "cannot run" in text and "exited with 1: boom" in text and "POST to" in text
