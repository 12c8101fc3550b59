"""Live smoke tests: one real image per provider, only when that provider's key is set.

    export BFL_API_KEY=...   # and/or REPLICATE_API_TOKEN, DEERAPI_KEY, COMETAPI_KEY
    .venv/bin/python -m pytest tests/live -v

Each test runs a one-prompt campaign with the cheapest model of that preset through the real
API (this costs one image) and checks it lands on disk as a valid image. Without the key the
test is skipped with the reason; CI has no keys.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

LIVE = {
    # preset: (key variable, model)
    "replicate": ("REPLICATE_API_TOKEN", "black-forest-labs/flux-schnell"),
    "bfl": ("BFL_API_KEY", "flux-dev"),
    "deerapi-replicate": ("DEERAPI_KEY", "black-forest-labs/flux-schnell"),
    "deerapi-flux": ("DEERAPI_KEY", "flux-dev"),
    "cometapi": ("COMETAPI_KEY", "black-forest-labs/flux-schnell"),
}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("preset", sorted(LIVE))
def test_one_real_image(tmp_path: Path, preset: str) -> None:
    key_env, model = LIVE[preset]
    if not os.environ.get(key_env):
        pytest.skip(f"{key_env} is not set: no live check of {preset}")
    (tmp_path / "jobs.yaml").write_text(
        f"campaign: live-{preset}\nprovider: {preset}\nmodel: {model}\n"
        "prompts: [a small red cube on a white table, studio photo]\n"
        "output: {dir: out}\ndeadline: 5m\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "runner", "run", "jobs.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=580,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (image,) = [p for p in (tmp_path / "out").iterdir() if p.suffix != ".json"]
    with Image.open(image) as img:
        img.verify()
    assert os.environ[key_env] not in (tmp_path / "runner.db").read_bytes().decode("latin-1")
