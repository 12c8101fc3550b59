"""Fuzzing the job-file loader and the prompts-file parser, in-process.

The property: loading either succeeds with values the store can keep (JSON that encodes as
UTF-8), or raises `InputError` whose message is one paragraph naming the file. Any other
exception is a bug: the CLI would print a traceback instead of telling the user what to fix.

Inputs are random documents built from the schema's own keys and junk ones, random bytes and
text, and mutations of a valid job file (lines deleted, repeated, swapped, characters replaced).
Hypothesis runs derandomized and without its example database, so CI sees the same examples.
"""

from __future__ import annotations

import base64
import json
import re
import string
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from runner.campaign import Campaign, input_fingerprint
from runner.errors import InputError
from runner.jobfile import load_jobfile
from runner.presets import PRESETS, PROVIDER_FIELDS
from runner.prompts import Entry, Place, read_prompts_file

JOB_FILE = "fuzz.yaml"
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=5000,  # ms; a pathological document may take a second to parse on a busy machine
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# A 1x1 PNG, so that image fields and `images:` can succeed too.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)

VALID = """\
campaign: fuzz
provider: {preset: bfl, api_key_env: RUNNER_TEST_KEY}
model: flux-pro-1.1
input:
  width: 512
  height: 512
  seed: 7
  output_format: png
vars:
  animal: [fox, owl]
prompts:
  - a {animal} under a lantern
  - prompt: a kite over the sea
    id: kite
    variants: [11, 22]
    input_image: photos/one.png
  - prompt: "{animal} at dawn, {style}"
    vars: {style: [ink, oil]}
prompts_file: prompts.txt
variants: 2
output:
  dir: out
  name: "{index:05d}-{slug}-{variant}.{ext}"
deadline: 1h30m
limits:
  max_in_flight: 4
  creates_per_minute: 60
  max_attempts: 3
priority: 20
reuse: true
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A job file's folder with the files the documents may name: prompts files, images."""
    base = tmp_path_factory.mktemp("fuzz")
    (base / "prompts.txt").write_text("# two prompts\na boat at dawn\n\na moth by a lamp\n")
    (base / "prompts.jsonl").write_text(
        '{"prompt": "a boat", "id": "boat", "seed": 3}\n"a moth"\n', encoding="utf-8"
    )
    (base / "prompts.csv").write_text("prompt,id,seed\na boat,boat,3\na moth,,\n")
    (base / "photos").mkdir()
    (base / "photos" / "one.png").write_bytes(PNG)
    (base / "photos" / "two.png").write_bytes(PNG)
    (base.parent / "outside.txt").write_text("a prompt outside\n")
    return base


def check_load(path: Path) -> Campaign | None:
    """Load `path`; assert the property; the campaign when it loaded."""
    try:
        campaign = load_jobfile(path)
    except InputError as exc:
        check_message(str(exc), path.name)
        field = re.search(r"field `([a-z_]+)", str(exc))
        _event(f"refused at {field.group(1) if field else 'the file'}")
        return None
    _event("loaded")
    # Loaded: everything must be storable, as the store will encode and hash it.
    settings_dict = campaign.settings.to_dict()
    json.dumps(settings_dict, ensure_ascii=False, allow_nan=False).encode("utf-8")
    for job in campaign.jobs:
        json.dumps(asdict(job), ensure_ascii=False, allow_nan=False).encode("utf-8")
        input_fingerprint(campaign.settings.provider.name, job.model, job.input)
    return campaign


def _event(name: str) -> None:
    # With --hypothesis-show-statistics: how far into the loader the examples get.
    if currently_in_test_context():
        event(name)


def check_message(message: str, file_name: str) -> None:
    assert message.strip(), "an empty message"
    assert "\n\n" not in message, message
    assert "Traceback" not in message, message
    assert file_name in message, f"the message does not name {file_name}: {message}"


def write(folder: Path, data: bytes) -> Path:
    path = folder / JOB_FILE
    path.write_bytes(data)
    return path


# --- strategies ---------------------------------------------------------------------------------

TOP_KEYS = [
    "campaign",
    "provider",
    "model",
    "models",
    "version",
    "input",
    "prompts",
    "prompts_file",
    "variants",
    "vars",
    "images",
    "reuse",
    "priority",
    "output",
    "deadline",
    "limits",
]
NESTED_KEYS = [
    *PROVIDER_FIELDS,
    "max_in_flight",
    "creates_per_minute",
    "max_attempts",
    "dir",
    "name",
    "field",
    "pattern",
    "prompt",
    "id",
    "seed",
    "width",
    "input_image",
    "input_images",
    "$file",
]
WORDS = [
    "",
    " ",
    "~",
    "null",
    "yes",
    "30m",
    "1h30m",
    "-5",
    "0",
    "{index}",
    "{",
    "}",
    "../x.txt",
    "../outside.txt",
    "/etc/hosts",
    "prompts.txt",
    "prompts.jsonl",
    "prompts.csv",
    "prompts.json",
    "photos",
    "photos/one.png",
    "input_image",
    "*.png",
    "bfl",
    "replicate",
    "flux-dev",
    "owner/name",
    "a" * 64,
    "https://example.com/a.png",
    "ftp://example.com/a.png",
    "data:image/png;base64,AAAA",
    "a\x00b",
    "\ud800",
    "x" * 300,
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=1200),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(WORDS),
)
KEYS = st.one_of(
    st.sampled_from(TOP_KEYS + NESTED_KEYS), st.text(max_size=8), st.integers(), st.booleans()
)
ANY = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=16,
)
TEMPLATE_PARTS = [
    "{index}",
    "{index:05d}",
    "{slug}",
    "{key}",
    "{id}",
    "{ext}",
    "{n}",
    "{seed:>10}",
    "{model}",
    "{image}",
    "{variant}",
    "{campaign}",
    "{foo}",
    "{slug:d}",
    "{index!r}",
    "{index.real}",
    "{index[0]}",
    "{index:99999999999}",
    "{index:{n}}",
    "{",
    "}",
    "{{",
    "}}",
    "-",
    ".",
    "..",
    "/",
    "\\",
    "é",
]
TEMPLATES = st.lists(st.sampled_from(TEMPLATE_PARTS), max_size=5).map("".join)
MODELS = st.sampled_from(
    ["flux-dev", "flux-pro-1.1", "black-forest-labs/flux-schnell", "a:b", "", "-x", "a/b/c"]
)
PROMPT_TEXT = st.one_of(
    st.sampled_from(["a fox", "a {animal}", "{animal} in {style}", "{{x}}", "  ", "a\x00b"]),
    st.text(max_size=20),
)
PROMPT_MAPPINGS = st.fixed_dictionaries(
    {"prompt": st.one_of(PROMPT_TEXT, ANY)},
    optional={
        "id": st.one_of(st.sampled_from(["fox", "fox", "a b", "x" * 65, "Fox"]), ANY),
        "variants": st.one_of(st.integers(-1, 5), st.lists(st.integers(0, 3), max_size=3), ANY),
        "vars": st.one_of(
            st.dictionaries(st.sampled_from(["animal", "style", "1a", ""]), ANY, max_size=2), ANY
        ),
        "seed": st.one_of(st.integers(), ANY),
        "input_image": st.one_of(st.sampled_from(WORDS), ANY),
        "input_images": st.lists(st.sampled_from(WORDS), max_size=3),
    },
)
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "campaign": st.sampled_from(["fuzz", "a.b-c_d", "..", "", "x" * 65, "fü"]),
    "provider": st.one_of(
        st.sampled_from([*PRESETS, "replicat", "BFL"]),
        st.dictionaries(
            st.sampled_from([*PROVIDER_FIELDS, "colour"]),
            st.one_of(
                st.sampled_from(
                    [*PRESETS, "bfl", "replicate", "bearer", "x-key", "get_result", "MY_KEY"]
                ),
                st.sampled_from(["http://127.0.0.1:9", "https://u:p@h", "https://h/?q", "h"]),
                SCALARS,
            ),
            max_size=4,
        ),
    ),
    "model": MODELS,
    "models": st.lists(MODELS, max_size=3),
    "version": st.sampled_from(["owner/name:" + "a" * 64, "a" * 64, "x", "owner/name:zz"]),
    "input": st.dictionaries(
        st.sampled_from(
            ["width", "seed", "input_image", "mask", "prompt", "$file", "input_images"]
        ),
        ANY,
        max_size=3,
    ),
    "prompts": st.lists(st.one_of(PROMPT_TEXT, PROMPT_MAPPINGS), max_size=4),
    "prompts_file": st.sampled_from(WORDS),
    "variants": st.one_of(st.integers(-2, 1200), st.lists(st.integers(-2, 5), max_size=4)),
    "vars": st.dictionaries(
        st.sampled_from(["animal", "style", "1a", "", "a-b"]),
        st.one_of(SCALARS, st.lists(SCALARS, max_size=4)),
        max_size=3,
    ),
    "images": st.fixed_dictionaries(
        {
            "dir": st.sampled_from(["photos", "..", "missing", "prompts.txt", "", "/tmp"]),
            "field": st.sampled_from(["input_image", "input_images", "colour", "prompt"]),
        },
        optional={"pattern": st.sampled_from(["*.png", "*", "[", "a/b", "*.jpg"])},
    ),
    "reuse": st.booleans(),
    "priority": st.integers(-5, 200),
    "output": st.fixed_dictionaries(
        {},
        optional={
            "dir": st.sampled_from(["out", "~/x", "a\x00b", "", "..", "/tmp/out"]),
            "name": TEMPLATES,
        },
    ),
    "deadline": st.one_of(
        st.sampled_from(["30m", "1h30m", "90s", "0s", "-5", "soon", "30m1h", "1h 30m", "5.5m"]),
        st.integers(),
        st.floats(),
    ),
    "limits": st.dictionaries(
        st.sampled_from(["max_in_flight", "creates_per_minute", "max_attempts", "junk"]),
        st.one_of(st.integers(), st.floats(), st.text(max_size=3)),
        max_size=3,
    ),
}


GOOD_PROMPTS = st.sampled_from(["a fox", "a {animal}", "{animal} in {style}", "a kite"])
# Values that pass, so that a document with one or two bad fields gets far into the loader.
GOOD: dict[str, st.SearchStrategy[Any]] = {
    "campaign": st.just("fuzz"),
    "provider": st.sampled_from(["bfl", "deerapi-flux"]),
    "model": st.sampled_from(["flux-dev", "flux-pro-1.1"]),
    "models": st.lists(
        st.sampled_from(["flux-dev", "flux-pro-1.1", "flux-kontext-pro"]),
        unique=True,
        min_size=1,
        max_size=3,
    ),
    "version": st.just("a" * 64),
    "input": st.fixed_dictionaries(
        {},
        optional={
            "width": st.integers(64, 2048),
            "seed": st.integers(0, 2**31),
            "output_format": st.just("png"),
            "input_image": st.sampled_from(["photos/one.png", "https://example.com/a.png"]),
        },
    ),
    "prompts": st.lists(
        st.one_of(
            GOOD_PROMPTS,
            st.fixed_dictionaries(
                {"prompt": GOOD_PROMPTS},
                optional={
                    "id": st.sampled_from(["fox", "owl", "kite"]),
                    "variants": st.integers(1, 3),
                    "seed": st.integers(0, 100),
                },
            ),
        ),
        min_size=1,
        max_size=4,
    ),
    "prompts_file": st.sampled_from(["prompts.txt", "prompts.jsonl", "prompts.csv"]),
    "variants": st.one_of(
        st.integers(1, 3), st.lists(st.integers(0, 99), unique=True, min_size=1, max_size=3)
    ),
    "vars": st.fixed_dictionaries(
        {"animal": st.lists(st.sampled_from(["fox", "owl", 3]), unique=True, min_size=1)},
        optional={"style": st.sampled_from(["ink", "oil"])},
    ),
    "images": st.just({"dir": "photos", "field": "input_image"}),
    "reuse": st.booleans(),
    "priority": st.integers(1, 100),
    "output": st.fixed_dictionaries(
        {},
        optional={
            "dir": st.just("out"),
            "name": st.sampled_from(["{index}-{slug}.{ext}", "{key}", "{id}-{variant}"]),
        },
    ),
    "deadline": st.sampled_from(["30m", "1h30m", "90s", 600]),
    "limits": st.fixed_dictionaries(
        {},
        optional={
            "max_in_flight": st.integers(1, 50),
            "creates_per_minute": st.floats(0.5, 1000),
            "max_attempts": st.integers(1, 9),
        },
    ),
}


# In how many of 20 documents each field appears (default 6); `version` and `models` conflict
# with `model`, so they are rare.
PRESENT = {"campaign": 19, "provider": 19, "model": 18, "prompts": 12, "version": 1, "models": 2}


@st.composite
def documents(draw: st.DrawFn) -> Any:
    """A job file's data: the schema's fields, mostly with values that pass, some not."""
    if draw(st.integers(0, 19)) == 0:
        return draw(ANY)  # a list, a scalar, or a mapping of anything
    doc: dict[Any, Any] = {}
    for key in TOP_KEYS:
        # The required fields are usually there, so that most documents get past the schema.
        if draw(st.integers(0, 19)) < PRESENT.get(key, 6):
            quality = draw(st.integers(0, 19))
            source = GOOD[key] if quality < 16 else FIELDS[key] if quality < 19 else ANY
            doc[key] = draw(source)
    if draw(st.integers(0, 9)) == 0:
        doc[draw(KEYS)] = draw(ANY)
    return doc


def dump(doc: Any, flow: bool | None, unicode: bool) -> bytes:
    text = yaml.safe_dump(doc, default_flow_style=flow, allow_unicode=unicode, sort_keys=False)
    # Lone surrogates become bytes that are not UTF-8: the loader must say so.
    return text.encode("utf-8", "surrogatepass")


# --- the job-file loader ------------------------------------------------------------------------


def test_the_valid_file_loads(folder: Path) -> None:
    campaign = check_load(write(folder, VALID.encode()))
    assert campaign is not None and len(campaign.jobs) > 10


@settings(FUZZ, max_examples=500)
@given(doc=documents(), flow=st.sampled_from([None, True, False]), unicode=st.booleans())
def test_random_documents(folder: Path, doc: Any, flow: bool | None, unicode: bool) -> None:
    check_load(write(folder, dump(doc, flow, unicode)))


@settings(FUZZ, max_examples=200)
@given(data=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)))
def test_random_bytes_and_text(folder: Path, data: bytes) -> None:
    check_load(write(folder, data))


# Escapes, which mean something inside the valid file's double-quoted strings.
ESCAPES = ["\\ud800", "\\udc00", "\\x00", "\\x1b", "\\N", "\\U0001F600", "\\"]
YAML_NOISE = [*":{}[]-#&*!|>'\"%@`,?\t\n \\\x00\x85\ufeff", "---", "...", "<<: *a", "&a ", *ESCAPES]


@st.composite
def mutations(draw: st.DrawFn) -> bytes:
    """The valid job file with lines deleted, repeated, swapped, characters replaced, and
    values replaced by double-quoted text with escapes."""
    lines = VALID.splitlines(keepends=True)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(
            st.sampled_from(["delete", "repeat", "swap", "char", "insert", "truncate", "value"])
        )
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        if op == "value":
            # "key: value" or "- value" gets a quoted value: escapes, text, or both.
            parts = draw(st.lists(st.one_of(st.sampled_from(ESCAPES), st.text(max_size=3))))
            quoted = '"' + "".join(parts).replace('"', '\\"') + '"'
            head = re.match(r"\s*(?:- )?(?:[\w$]+: )?", lines[i])
            lines[i] = (head.group() if head else "") + quoted + "\n"
        elif op == "delete":
            del lines[i]
        elif op == "repeat":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "truncate":
            lines = lines[:i]
        else:
            line = lines[i]
            at = draw(st.integers(0, len(line)))
            noise = draw(st.one_of(st.sampled_from(YAML_NOISE), st.text(max_size=3)))
            cut = 1 if op == "char" else 0
            lines[i] = line[:at] + noise + line[at + cut :]
    return "".join(lines).encode("utf-8", "surrogatepass")


@settings(FUZZ, max_examples=500)
@given(data=mutations())
def test_mutations_of_a_valid_file(folder: Path, data: bytes) -> None:
    check_load(write(folder, data))


# --- the prompts-file parser --------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False),
        st.text(max_size=10),
        st.sampled_from(WORDS),
    ),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(NESTED_KEYS) | st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)
JSONL_LINES = st.one_of(
    st.fixed_dictionaries(
        {"prompt": st.one_of(PROMPT_TEXT, JSON_VALUES)},
        optional={
            "id": st.one_of(st.sampled_from(["fox", "owl", "a b"]), JSON_VALUES),
            "variants": JSON_VALUES,
            "vars": JSON_VALUES,
            "seed": JSON_VALUES,
        },
    ).map(json.dumps),
    JSON_VALUES.map(json.dumps),
    st.sampled_from(['{"prompt": "a", "prompt": "b"}', '{"prompt": NaN}', "{", '"\\ud800"', ""]),
    st.text(max_size=20),
)
CSV_CELLS = st.one_of(
    st.sampled_from(["fox", "1", "1.5", "true", "null", "[1, 2]", '{"a": 1}', '"x"', "", " "]),
    st.text(alphabet=string.printable + "é\x00", max_size=8),
)


@st.composite
def prompts_files(draw: st.DrawFn) -> tuple[str, bytes]:
    suffix = draw(st.sampled_from([".txt", ".jsonl", ".csv"]))
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return suffix, draw(st.binary(max_size=200))
    if suffix == ".jsonl":
        text = "\n".join(draw(st.lists(JSONL_LINES, max_size=5)))
    elif suffix == ".csv":
        header = draw(
            st.lists(st.sampled_from(["prompt", "id", "variants", "vars", "seed", ""]), max_size=4)
        )
        rows = draw(st.lists(st.lists(CSV_CELLS, max_size=5), max_size=4))
        text = "\n".join(",".join(row) for row in [header, *rows])
    else:
        text = "\n".join(draw(st.lists(st.one_of(PROMPT_TEXT, st.just("# c")), max_size=5)))
    ending = draw(st.sampled_from(["\n", "\r\n"]))
    return suffix, text.replace("\n", ending).encode("utf-8", "surrogatepass")


@pytest.fixture(scope="module")
def prompts_folder(folder: Path) -> Iterator[Path]:
    sub = folder / "prompts_fuzz"
    sub.mkdir()
    yield sub


@settings(FUZZ, max_examples=400)
@given(case=prompts_files())
def test_random_prompts_files(prompts_folder: Path, case: tuple[str, bytes]) -> None:
    suffix, data = case
    name = f"fuzz{suffix}"
    (prompts_folder / name).write_bytes(data)
    place = Place(JOB_FILE, 3, "prompts_file")
    try:
        entries = read_prompts_file(name, place, prompts_folder, JOB_FILE)
    except InputError as exc:
        check_message(str(exc), JOB_FILE)
        return
    for entry in entries:
        assert isinstance(entry, Entry)
        assert isinstance(entry.prompt, str) and entry.prompt.strip()
        json.dumps(
            [entry.prompt, entry.id, entry.variants, entry.overrides, entry.vars],
            ensure_ascii=False,
            allow_nan=False,
        ).encode("utf-8")
