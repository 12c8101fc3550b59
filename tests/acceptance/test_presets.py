"""Every provider preset, end to end through the CLI against the simulator.

`--simulator-url` points each preset at the simulator while keeping its path prefix and auth
scheme, so the simulator checks that every preset speaks its API exactly: the right create
route, the right auth header (a wrong scheme is a 401 there, as at the real API), and queries
that never follow an aggregator's upstream URLs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.acceptance.conftest import SimProcess, db_rows, run_cli

PRESETS = {
    # preset: (model, create route at the simulator, query route)
    "replicate": (
        "black-forest-labs/flux-schnell",
        "/v1/models/{owner}/{name}/predictions",
        "/v1/predictions/{id}",
    ),
    "bfl": ("flux-pro-1.1", "/v1/{model}", "polling_url"),
    "deerapi-replicate": (
        "black-forest-labs/flux-1.1-pro",
        "/replicate/v1/models/{owner}/{name}/predictions",
        "/replicate/v1/predictions/{id}",
    ),
    "deerapi-flux": ("flux-dev", "/flux/v1/{model}", "/flux/v1/get_result"),
    "cometapi": (
        "black-forest-labs/flux-schnell",
        "/replicate/v1/models/{owner}/{name}/predictions",
        "/replicate/v1/predictions/{id}",
    ),
}


@pytest.mark.sim_config({"duration_median": 1.0, "duration_sigma": 0.1})
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_campaign_end_to_end(tmp_path: Path, simulator: SimProcess, preset: str) -> None:
    model, create_route, _ = PRESETS[preset]
    (tmp_path / "jobs.yaml").write_text(
        f"campaign: {preset}\nprovider: {preset}\nmodel: {model}\n"
        "prompts: [a tin robot, a glass whale, a paper moon]\noutput: {dir: out}\n"
    )
    result = run_cli("run", "jobs.yaml", "--simulator-url", simulator.url, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = db_rows(tmp_path / "runner.db")
    assert [r["state"] for r in rows] == ["done"] * 3
    stats = simulator.stats()
    assert stats["creates_by_route"] == {create_route: 3}
    assert stats["auth_failures"] == 0 and stats["downloads_with_auth"] == 0
    assert len([p for p in (tmp_path / "out").iterdir() if p.suffix != ".json"]) == 3


def test_bfl_polls_the_returned_polling_url_and_aggregator_the_base_url(
    tmp_path: Path, simulator: SimProcess
) -> None:
    for preset in ("bfl", "deerapi-flux"):
        folder = tmp_path / preset
        folder.mkdir()
        (folder / "jobs.yaml").write_text(
            f"campaign: {preset}\nprovider: {preset}\nmodel: flux-dev\nprompts: [a kite]\n"
        )
        before = simulator.stats()
        result = run_cli("run", "jobs.yaml", "--simulator-url", simulator.url, cwd=folder)
        assert result.returncode == 0, result.stderr
        after = simulator.stats()
        via_polling_url = after["polls_via_polling_url"] - before["polls_via_polling_url"]
        polls = after["polls"] - before["polls"]
        assert polls >= 1
        if preset == "bfl":
            assert via_polling_url == polls  # BFL's own regional URL, verbatim
        else:
            assert via_polling_url == 0  # DeerAPI's copied upstream URL is never followed
