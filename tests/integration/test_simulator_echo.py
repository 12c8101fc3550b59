"""The simulator as a debugging proxy that echoes the caller's key (`SimConfig.echo_key`).

What it adds is read back with the standard library's decoders (so a wrong encoding fails
here), over real sockets, on error answers and on predictions; what it must leave alone (files,
answers cut off on purpose, everything when the switch is off) is checked too.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
from typing import Any
from urllib.parse import unquote_plus

import httpx
import pytest

from runner.simulator import SimConfig, running_in_thread
from runner.simulator.config import ECHO_ENCODINGS
from runner.simulator.echo import echoes, with_echo

KEY = "sim-KEY/+=0123456789"
BEARER = {"Authorization": f"Bearer {KEY}"}
XKEY = {"x-key": KEY}
_ECHO = re.compile(r"\(proxy echo: ([^)]*)\)")


def _decoded(piece: str) -> str:
    """Whatever a piece decodes to, by any of the encodings; the piece itself otherwise."""
    texts = [piece, unquote_plus(piece)]
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        with contextlib.suppress(binascii.Error, UnicodeDecodeError):
            texts.append(decode(piece + "=" * (-len(piece) % 4)).decode())
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        texts.append(bytes.fromhex(piece).decode())
    return " | ".join(texts)


def _echoed_values(text: str) -> list[str]:
    match = _ECHO.search(text)
    assert match, f"no echo in {text!r}"
    return [_decoded(piece) for piece in match.group(1).split("; ")]


@pytest.mark.parametrize("encoding", ECHO_ENCODINGS)
def test_each_encoding_echoes_the_value_and_the_header_line(encoding: str) -> None:
    pieces = echoes("authorization", f"Bearer {KEY}", [encoding])
    assert pieces and all(f"Bearer {KEY}" in _decoded(p) for p in pieces), pieces
    assert any(f"authorization: Bearer {KEY}" in _decoded(p) for p in pieces), pieces
    if encoding != "plain":
        assert all(KEY not in p for p in pieces), pieces  # encoded, not as sent
    if encoding.startswith("base64"):
        # the line at three byte alignments: three different encodings of the key
        assert len({p for p in pieces if "authorization" in _decoded(p)}) == 3


def test_the_echo_goes_where_the_runner_reads_an_answers_words() -> None:
    note = "(proxy echo: X)"
    assert with_echo({"detail": "Not found"}, 404, note) == {"detail": f"Not found {note}"}
    assert with_echo({"title": "Unauthenticated"}, 401, note)["detail"] == note
    bfl_422 = with_echo({"detail": [{"loc": ["body", "width"], "msg": "m"}]}, 422, note)
    assert bfl_422["detail"][-1]["msg"] == note and len(bfl_422["detail"]) == 2
    prediction = {"status": "failed", "logs": "Running...\n", "error": "boom"}
    assert with_echo(prediction, 200, note) == {
        "status": "failed",
        "logs": f"Running...\n{note}\n",
        "error": f"boom {note}",
    }
    task = {"status": "Error", "details": {"error": "e"}}
    assert with_echo(task, 200, note)["details"] == {"error": "e", "debug": note}
    created = {"id": "t1", "polling_url": "https://x/v1/get_result?id=t1"}
    assert with_echo(created, 200, note) == created
    assert with_echo(["a", "b"], 500, note) == ["a", "b"]


def test_echo_key_accepts_an_encoding_or_a_list_of_them() -> None:
    assert SimConfig(echo_key="hex").echo_encodings == ("hex",)
    assert SimConfig(echo_key=["url", "base64"]).echo_encodings == ("url", "base64")
    assert SimConfig().echo_encodings == ()
    assert SimConfig.from_dict(SimConfig(echo_key=["url"]).to_dict()).echo_key == ["url"]
    for wrong in ("rot13", ["hex", "rot13"], [], 5):
        with pytest.raises(ValueError, match="echo_key"):
            SimConfig(echo_key=wrong)  # type: ignore[arg-type]


def _post(url: str, path: str, headers: dict[str, str], body: Any) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, headers=headers, timeout=10)


@pytest.mark.parametrize("encoding", ECHO_ENCODINGS)
def test_error_answers_and_failed_predictions_carry_the_callers_key(encoding: str) -> None:
    config = SimConfig(duration_median=0.0, duration_sigma=0.0, echo_key=encoding)
    with running_in_thread(config=config) as sim:
        # a Replicate problem+json: the Authorization value
        refused = _post(sim.url, "/v1/predictions", BEARER, {"version": 5, "input": {}})
        assert refused.status_code == 422
        assert any(f"Bearer {KEY}" in v for v in _echoed_values(refused.json()["detail"]))
        # BFL's validation list: the x-key value
        invalid = _post(sim.url, "/v1/flux-dev", XKEY, {"prompt": "p", "width": 1000})
        assert invalid.status_code == 422
        assert any(KEY in v for v in _echoed_values(invalid.json()["detail"][-1]["msg"]))
        # a failed generation, answered with 200
        sim.sim.update_config({"faults": {"create": {"fail_rate": 1.0}}})
        made = _post(
            sim.url, "/v1/models/a/b/predictions", {**BEARER, "Prefer": "wait=5"}, {"input": {}}
        )
        assert made.json()["status"] == "failed"
        assert any(f"Bearer {KEY}" in v for v in _echoed_values(made.json()["error"]))
        assert any(f"Bearer {KEY}" in v for v in _echoed_values(made.json()["logs"]))
        task = _post(sim.url, "/v1/flux-dev", XKEY, {"prompt": "p"}).json()
        result = httpx.get(task["polling_url"], headers=XKEY, timeout=10).json()
        assert result["status"] == "Error"
        assert any(KEY in v for v in _echoed_values(result["details"]["debug"]))


def test_files_cut_off_answers_and_the_switch_off_are_left_alone() -> None:
    config = SimConfig(duration_median=0.0, duration_sigma=0.0)
    with running_in_thread(config=config) as sim:
        plain = _post(sim.url, "/v1/flux-dev", XKEY, {"prompt": "p", "width": 1000})
        assert "proxy echo" not in plain.text
        task = _post(sim.url, "/v1/flux-dev", XKEY, {"prompt": "p"}).json()
        ready = httpx.get(task["polling_url"], headers=XKEY, timeout=10).json()
        before = httpx.get(ready["result"]["sample"], timeout=10).content

        sim.sim.update_config({"echo_key": list(ECHO_ENCODINGS)})
        after = httpx.get(ready["result"]["sample"], headers=XKEY, timeout=10)
        assert after.content == before, "a file was changed"
        sim.sim.update_config({"faults": {"create": {"drop_after_create_rate": 1.0}}})
        with pytest.raises(httpx.RemoteProtocolError):  # still cut off halfway
            _post(sim.url, "/v1/flux-dev", XKEY, {"prompt": "p"})
