"""Job keys and input fingerprints are the hashes they have always been.

The loader encodes each job's input once and hashes that text twice, for the key and (in the
store) for the fingerprint, instead of encoding the input for each. These tests hold both to the
formulas they replaced, written out here as they were, on inputs of every shape and character.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from runner.campaign import JobSpec, canonical_json, input_fingerprint, input_view
from runner.inputs import MARKER_KEY, has_files, key_view
from runner.jobfile import _prompt_splice, job_key

# Text of any characters but half a UTF-16 pair (which the loader refuses), or of ASCII alone:
# the ASCII-only and the plain encodings of JSON differ from DEL (0x7F) on.
texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=8) | st.text(
    st.characters(max_codepoint=0x7F), max_size=8
)
markers = st.fixed_dictionaries(
    {
        MARKER_KEY: texts,
        "sha256": st.text("0123456789abcdef", min_size=64, max_size=64),
        "bytes": st.integers(0, 10**6),
        "mime": st.sampled_from(["image/png", "image/jpeg"]),
    }
)
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts
values = st.recursive(
    scalars | markers,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
inputs = st.dictionaries(texts, values, max_size=5)


def original_key(model: str, input: dict[str, Any], variant: int, seeded: bool) -> str:
    obj: dict[str, Any] = {"model": model, "input": key_view(input)}
    if not seeded and variant > 0:
        obj["variant"] = variant
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return "h" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:20]


def original_fingerprint(provider: str, model: str, input: dict[str, Any]) -> str:
    obj = {"provider": provider, "model": model, "input": key_view(input)}
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


@given(model=texts, input=inputs, variant=st.integers(0, 1000), seeded=st.booleans())
@example(model="flux-dev", input={"prompt": "a fox", "note": "\x7f"}, variant=0, seeded=False)
@example(model="flux-dev", input={"prompt": "a renard, café"}, variant=1, seeded=False)
def test_job_keys_hash_what_they_always_hashed(
    model: str, input: dict[str, Any], variant: int, seeded: bool
) -> None:
    assert job_key(model, input, variant, seeded) == original_key(model, input, variant, seeded)


@given(provider=texts, model=texts, input=inputs)
def test_fingerprints_hash_what_they_always_hashed(
    provider: str, model: str, input: dict[str, Any]
) -> None:
    expected = original_fingerprint(provider, model, input)
    assert input_fingerprint(provider, model, input) == expected
    given_view = JobSpec("k", 1, model, input, view=input_view(input))
    assert given_view.fingerprint(provider) == expected
    assert JobSpec("k", 1, model, input).fingerprint(provider) == expected


def test_a_replaced_input_never_keeps_the_view_of_the_old_one() -> None:
    spec = JobSpec("k", 1, "flux-dev", {"prompt": "a fox"}, view=input_view({"prompt": "a fox"}))
    other = dataclasses.replace(spec, input={"prompt": "a cat"})
    assert other.fingerprint("bfl") == original_fingerprint("bfl", "flux-dev", {"prompt": "a cat"})
    assert other == JobSpec("k", 1, "flux-dev", {"prompt": "a cat"})


plain_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)


@given(base=st.dictionaries(texts, plain_values, max_size=5), prompt=texts)
@example(base={"note": "\x00prompt\x00"}, prompt="a fox")
@example(base={"prompt": "the default", "width": 512}, prompt="a fox")
def test_a_prompts_jobs_view_written_around_its_prompt_is_the_whole_view(
    base: dict[str, Any], prompt: str
) -> None:
    splice = _prompt_splice(base)
    whole = input_view({**base, "prompt": prompt})
    if splice is None:  # only when another value holds the text that stands for the prompt
        assert canonical_json("\x00prompt\x00") in canonical_json(base)
    else:
        assert f"{splice[0]}{canonical_json(prompt)}{splice[1]}" == whole


@given(base=inputs.filter(has_files))
def test_an_input_naming_a_file_is_never_written_around_its_prompt(base: dict[str, Any]) -> None:
    assert _prompt_splice(base) is None
