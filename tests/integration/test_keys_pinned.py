"""Job keys, input fingerprints and stored rows, pinned to values computed once.

Databases already written rely on them: a job's key decides whether a job file run again adds
it or finds it done, and its fingerprint finds a done result to reuse. A change to how either is
computed (or to what `submit` stores) would silently queue everything again, so any difference
from these values fails here, whatever the reason.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from runner.jobfile import load_jobfile
from runner.store import open_store
from runner.store.schema import jobs
from runner.store.store import Store

# Not images, but they start like a PNG, and that is all the loader looks at: fixed bytes
# keep the content hashes, and so the keys, independent of any image library.
PNG = b"\x89PNG\r\n\x1a\n"

MANY = """\
campaign: pins
provider: bfl
models: [flux-dev, flux-pro-1.1]
input: {width: 1024, height: 768, safety_tolerance: 2, extra: {a: 1, b: [1, 2]}}
variants: 2
vars: {animal: [fox, 猫]}
prompts:
  - a {animal} in fog
  - prompt: Café at night, ünïcödé ☕ "quoted" \\ back
    seed: 7
  - prompt: a lighthouse
    id: light
    variants: [11, 22]
    extra: {b: [3], c: null}
  - prompt: "{animal} under a {colour} sky"
    id: sky
    vars: {colour: [red, 3]}
  - prompt: with a reference image
    input_image: ref.png
  - a {animal} in fog
prompts_file: more.txt
"""
MORE = "plain prompt from a file\n# a comment\n\n  tabs\tand spaces  \n"

FOLDER = """\
campaign: pins-folder
provider: replicate
model: black-forest-labs/flux-kontext-pro
input: {output_format: png}
images: {dir: photos, field: input_images}
reuse: true
output: {name: "{key}-{image}.{ext}"}
prompts: [make it night, {prompt: add snow, id: snow}]
"""


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = open_store(db_url)
    yield s
    s.close()


def _write(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ref.png").write_bytes(PNG + b"reference")
    (folder / "photos").mkdir()
    (folder / "photos" / "a.png").write_bytes(PNG + b"first")
    (folder / "photos" / "b.png").write_bytes(PNG + b"second")
    (folder / "more.txt").write_text(MORE, encoding="utf-8")
    many = folder / "many.yaml"
    many.write_text(MANY, encoding="utf-8")
    images = folder / "folder.yaml"
    images.write_text(FOLDER, encoding="utf-8")
    return many, images


def _rows(store: Store, campaign: str, folder: Path) -> list[dict[str, Any]]:
    """The campaign's rows as stored, JSON columns as the values their text holds (with the
    folder left out): the text's spacing is free, and changed when orjson began writing it."""
    stmt = (
        sa.select(
            jobs.c.key,
            jobs.c.idx,
            jobs.c.provider,
            jobs.c.model,
            sa.cast(jobs.c.input, sa.Text).label("input"),
            sa.cast(jobs.c.meta, sa.Text).label("meta"),
            jobs.c.input_hash,
            jobs.c.state,
        )
        .where(jobs.c.campaign == campaign)
        .order_by(jobs.c.id)
    )
    with store.read() as conn:
        rows = [dict(row._mapping) for row in conn.execute(stmt)]
    for row in rows:
        row["input"] = json.loads(row["input"].replace(str(folder.resolve()), "<folder>"))
        row["meta"] = json.loads(row["meta"])
    return rows


def _digest(rows: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


# The first jobs of many.yaml, and some with ids: (key, input fingerprint).
MANY_PINS = [
    ("h3dfc9391cb90ba81e841", "0b6e3ebe988d74a3569c46135b08153bcde2a703d9059b008c1344060a4f7e10"),
    ("h7a024c4bf6f0c88eeb71", "0b6e3ebe988d74a3569c46135b08153bcde2a703d9059b008c1344060a4f7e10"),
    ("hb9b213dc97ccb2cb674e", "6f641c11ba2b0909560b855205c3253a5dad99cb520b21e8081a878e7158d3ba"),
]
ID_PINS = [
    ("light@flux-dev", "a6572c1af3691e948db5c5dca04281c7bdc9b60b8710facda68b545449ad21a7"),
    ("light.v1@flux-dev", "9a22fb7271a1bd11c3e324e02cc45227c43c63fab683dba44fc7791eef05f7f2"),
    ("light@flux-pro-1.1", "470f1dd5e6aa61082d4b230bea5c09bb2a089d14d41897183dc92681dc28ae55"),
    ("sky~2c21c2ab23@flux-dev", "72b1de2dd378982196842bd8bc6326e7b5dcecb1a173ed09f231d7574abcecbe"),
]
FOLDER_PINS = [
    ("h57e9f6a8bfa59f0b42b3", "db5cebcd22fe4ad966d075fad5cc11507eab9ff3d78e303e9938e562e54744de"),
    ("hfce700a4f1dc3fed17ea", "9cbe4323c37490aee4e1f92c1d38f2dc6818ba0a858990ad2559ae8c27e0ea54"),
    ("snow~7be417ff82", "0c93aa15ab6bcf0b1759b7103c0d4175207969fa6277ed090b110c049dde0ef8"),
    ("snow~3f5f95c82e", "d58d2e44fea0235a5d6afadef09df0340060993521b8f9b1d2375a6d0707b59f"),
]
# Of every stored column that a job file decides, for every job, in id order (JSON columns by
# their values; these are the digests of the text pins before, decoded).
MANY_DIGEST = "3e1285869e1a975063acb3154df25dca765173e57b3cc72980d4b70cd2347124"
FOLDER_DIGEST = "24762b6111513581a882a1f3d7db0667876f29b86cb360f2a5bfb4a6491d8c83"


def test_keys_fingerprints_and_stored_rows_are_pinned(store: Store, tmp_path: Path) -> None:
    many_file, folder_file = _write(tmp_path)
    many, folder = load_jobfile(many_file), load_jobfile(folder_file)
    assert (len(many.jobs), many.duplicates) == (44, 8)
    store.enqueue(many, now=1000.0)
    store.enqueue(folder, now=1000.0)

    rows = _rows(store, "pins", tmp_path)
    pairs = [(row["key"], row["input_hash"]) for row in rows]
    assert pairs[:3] == MANY_PINS
    assert [pair for pair in pairs if pair[0] in dict(ID_PINS)] == ID_PINS
    assert rows[0] == {
        "key": "h3dfc9391cb90ba81e841",
        "idx": 1,
        "provider": "bfl",
        "model": "flux-dev",
        "input": {
            "width": 1024,
            "height": 768,
            "safety_tolerance": 2,
            "extra": {"a": 1, "b": [1, 2]},
            "prompt": "a fox in fog",
        },
        "meta": {
            "prompt": "a fox in fog",
            "id": None,
            "variant": 0,
            "seed": None,
            "slug": "a-fox-in-fog",
            "source": "many.yaml:8",
            "vars": {"animal": "fox"},
        },
        "input_hash": "0b6e3ebe988d74a3569c46135b08153bcde2a703d9059b008c1344060a4f7e10",
        "state": "queued",
    }
    assert _digest(rows) == MANY_DIGEST

    folder_rows = _rows(store, "pins-folder", tmp_path)
    assert [(row["key"], row["input_hash"]) for row in folder_rows] == FOLDER_PINS
    assert folder_rows[0]["input"] == {
        "output_format": "png",
        "prompt": "make it night",
        "input_images": [
            {
                "$file": "<folder>/photos/a.png",
                "sha256": "a18990231a2bd0b4c7926c8d866816489b791537a501a84ff621f6504d162c42",
                "bytes": 13,
                "mime": "image/png",
            }
        ],
    }
    assert _digest(folder_rows) == FOLDER_DIGEST

    # Loading again finds every job: the keys are what the store already holds.
    assert store.count_new(load_jobfile(many_file)) == 0
    again = store.enqueue(load_jobfile(folder_file))
    assert (again.added, again.existing) == (0, 4)
