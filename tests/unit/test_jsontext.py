"""JSON text written by orjson, and by the standard library for what orjson refuses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner import jsontext

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()  # beyond 64 bits too, which orjson refuses
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=("Cs",))),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@given(value=values)
def test_the_text_reads_back_as_the_value(value: Any) -> None:
    assert json.loads(jsontext.dumps(value)) == value
    indented = jsontext.dumps_indented(value)
    assert indented.endswith(b"\n")
    assert json.loads(indented) == value


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"seed": 2**70}, {"seed": 2**70}),  # orjson takes 64-bit integers only
        ({1: "a"}, {"1": "a"}),  # and text keys only; json.dumps writes the key as text
    ],
)
def test_what_orjson_refuses_is_written_by_the_standard_library(value: Any, expected: Any) -> None:
    assert json.loads(jsontext.dumps(value)) == expected
    assert json.loads(jsontext.dumps_indented(value)) == expected


def test_the_text_is_compact_and_keeps_characters_as_they_are() -> None:
    assert jsontext.dumps({"prompt": "café ☕", "n": [1, 2]}) == '{"prompt":"café ☕","n":[1,2]}'


def test_indented_text_writes_what_json_cannot_carry_as_its_str() -> None:
    text = jsontext.dumps_indented({"file": Path("out/a.png"), "big": 2**70})
    assert json.loads(text) == {"file": "out/a.png", "big": 2**70}
    assert text.startswith(b'{\n  "file": "out/a.png"')
