"""Whether a job file may continue the campaign of its name, and what --move-queued does
(`runner.clash`). No I/O."""

from __future__ import annotations

from dataclasses import replace

import pytest

from runner.campaign import JobSpec
from runner.clash import Followed, find_clash, plan_move, still_followed
from runner.presets import PRESETS

BFL = PRESETS["bfl"]
FLUX = frozenset({"flux-pro-1.1"})


@pytest.mark.parametrize(
    ("changed", "clashes"),
    [
        ({}, False),
        ({"base_url": "https://api.deerapi.com/flux"}, True),
        ({"api_key_env": "BFL_OTHER_KEY"}, True),
        ({"style": "replicate"}, True),
        ({"name": "custom"}, False),  # the same account, written without the preset
        ({"poll": "get_result"}, False),  # how to poll it is not which account it is
        ({"prefer_wait": 10}, False),
        ({"routes": ("list",)}, False),
    ],
)
def test_only_another_account_clashes(changed: dict[str, object], clashes: bool) -> None:
    wanted = replace(BFL, **changed)  # type: ignore[arg-type]
    assert (find_clash("c", BFL, FLUX, wanted, FLUX) is not None) is clashes


@pytest.mark.parametrize(
    "models",
    [frozenset({"flux-dev"}), frozenset({"flux-pro-1.1", "flux-dev"}), frozenset()],
)
def test_another_set_of_models_clashes(models: frozenset[str]) -> None:
    found = find_clash("c", BFL, FLUX, BFL, models)
    assert found is not None and not found.other_account


def test_the_paragraph_names_both_sides_and_both_ways_on() -> None:
    replicate = PRESETS["replicate"]
    found = find_clash("nightly", BFL, FLUX, replicate, frozenset({"a/b"}))
    assert found is not None
    text = found.describe("/srv/runner.db", "/srv/other.yaml", queued=3)
    for part in (
        "campaign 'nightly'",
        "/srv/runner.db",
        "/srv/other.yaml",
        "provider bfl (bfl style at https://api.bfl.ai, key in BFL_API_KEY)",
        "model flux-pro-1.1",
        "provider replicate (replicate style at https://api.replicate.com, key in "
        "REPLICATE_API_TOKEN)",
        "model a/b",
        "campaign:",
        "--move-queued",
        "3 queued job(s)",
        "Nothing was changed",
    ):
        assert part in text, part
    models_only = find_clash("nightly", BFL, FLUX, BFL, frozenset({"flux-dev"}))
    assert models_only is not None
    assert "provider" not in models_only.describe("db", "f.yaml", 0).split(", but")[0]


def test_a_move_makes_the_listed_queued_jobs_the_files_and_withdraws_the_rest() -> None:
    specs = {k: JobSpec(key=k, index=i, model="m", input={"prompt": k}) for i, k in enumerate("ab")}
    plan = plan_move([(1, "a"), (2, "x"), (3, "b")], specs)
    assert plan.update == [(1, specs["a"]), (3, specs["b"])]
    assert plan.withdraw == [2]


def test_only_unsettled_jobs_at_another_account_are_followed() -> None:
    replicate = PRESETS["replicate"]
    followed = [Followed(BFL, frozenset({1, 2, 3})), Followed(replicate, frozenset({4}))]
    left = still_followed(followed, frozenset({2, 3, 4}), current=replicate)
    assert left == [Followed(BFL, frozenset({2, 3}))]  # 1 settled; 4 is the campaign's own now
    assert still_followed(followed, frozenset(), current=replicate) == []
    round_trip = Followed.from_dict(followed[0].to_dict())
    assert round_trip == followed[0]
