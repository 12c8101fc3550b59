"""Which jobs of a job file their provenance sidecars prove done (`runner.recovery`). Pure,
with the image hashes given."""

from __future__ import annotations

from pathlib import Path

from runner.campaign import Campaign, CampaignSettings, JobSpec
from runner.presets import PRESETS
from runner.recovery import Sidecar, parse, proven_done
from runner.report.provenance import sidecar_bytes

OUT = Path("/out")


def campaign(*keys: str, model: str = "flux-pro-1.1") -> Campaign:
    settings = CampaignSettings("c", PRESETS["bfl"], str(OUT), "{index}.{ext}")
    jobs = [JobSpec(key=k, index=i, model=model, input={"prompt": k}) for i, k in enumerate(keys)]
    return Campaign(settings, jobs)


def sidecar(key: str, n: int = 1, of: int = 1, model: str = "flux-pro-1.1") -> Sidecar:
    record = {
        "format": "runner-provenance/1",
        "campaign": "c",
        "key": key,
        "model": model,
        "remote_id": f"r-{key}",
        "created_at": "2026-01-02T03:04:05.000Z",
        "submitted_at": "2026-01-02T03:04:06.000Z",
        "ready_at": "2026-01-02T03:04:09.500Z",
        "finished_at": "2026-01-02T03:04:10.000Z",
        "image": {"n": n, "of": of, "sha256": f"sha-{key}-{n}", "bytes": 10},
    }
    found = parse(sidecar_bytes(record), OUT / f"{key}-{n}.png.json")
    assert found is not None
    return found


def hashes(path: Path) -> str | None:
    """Every image on disk holds what its sidecar says, but for `b-1.png` (changed)."""
    if path.name == "b-1.png":
        return "something else"
    key, n = path.stem.rsplit("-", 1)
    return f"sha-{key}-{n}"


def test_a_job_with_all_its_images_whole_is_done_with_its_prediction_and_times() -> None:
    done = proven_done(campaign("a"), [sidecar("a", 1, 2), sidecar("a", 2, 2)], hashes)
    assert list(done) == ["a"]
    assert done["a"]["remote_id"] == "r-a"
    assert [f["path"] for f in done["a"]["files"]] == ["/out/a-1.png", "/out/a-2.png"]
    assert done["a"]["finished_at"] - done["a"]["submitted_at"] == 4.0
    assert done["a"]["created_at"] is not None


def test_a_job_missing_an_image_a_changed_image_or_another_model_is_not_done() -> None:
    found = [
        sidecar("a", 1, 2),  # its second image is not there
        sidecar("b"),  # its image changed since
        sidecar("c", model="flux-dev"),  # another model's job of that key
        sidecar("zzz"),  # not a job of this file
    ]
    assert proven_done(campaign("a", "b", "c"), found, hashes) == {}


def test_other_json_files_are_not_sidecars() -> None:
    path = OUT / "x.json"
    assert parse(b"{not json", path) is None
    assert parse(b'{"format": "something/1"}', path) is None
    assert parse(b'{"format": "runner-provenance/1", "campaign": "c"}', path) is None
    assert parse(b"[1, 2]", path) is None
