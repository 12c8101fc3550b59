"""File names for downloaded images: templates are checked up front and names never escape."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.campaign import JobSpec
from runner.naming import (
    DEFAULT_TEMPLATE,
    MAX_NAME_BYTES,
    TEMPLATE_FIELDS,
    job_fields,
    render_filename,
    slugify,
    validate_template,
)

FIELDS = {
    "campaign": "lanterns",
    "index": 7,
    "key": "h0123456789abcdef0123",
    "id": "fox",
    "slug": "a-fox-in-snow",
    "variant": 0,
    "seed": 42,
    "model": "flux-pro-1.1",
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A Red Paper Lantern!", "a-red-paper-lantern"),
        ("  --hello__world--  ", "hello-world"),
        ("Café crème brûlée", "cafe-creme-brulee"),
        ("Straße in Ærøskøbing", "strasse-in-aeroskobing"),
        ("北京", "image"),
        ("", "image"),
        ("!!!", "image"),
    ],
)
def test_slugify(text: str, expected: str) -> None:
    assert slugify(text) == expected


def test_slugify_cuts_at_max_len_without_a_trailing_dash() -> None:
    slug = slugify("one two three four five six seven eight nine", max_len=12)
    assert slug == "one-two-thre"
    assert slugify("abcdefghij klm", max_len=11) == "abcdefghij"


def test_template_fields_are_the_documented_ones() -> None:
    assert set(TEMPLATE_FIELDS) == {
        "campaign",
        "index",
        "key",
        "id",
        "slug",
        "variant",
        "seed",
        "model",
        "image",
        "n",
        "ext",
    }


@pytest.mark.parametrize(
    "template",
    [
        DEFAULT_TEMPLATE,
        "{key}",
        "{id}-{variant}.{ext}",
        "{campaign}_{index:04d}_{n}",
        "{{{index}}}",
    ],
)
def test_valid_templates_pass(template: str) -> None:
    validate_template(template)


@pytest.mark.parametrize(
    ("template", "fragment"),
    [
        ("{index}-{prompt}", "unknown field {prompt}"),
        ("{index", "not valid"),
        ("{index}}", "not valid"),
        ("sub/{index}", "path separator"),
        ("sub\\{index}", "path separator"),
        ("..{index}", "'..'"),
        ("{slug}.{ext}", "none of {index}, {key}, {id}"),
        ("{slug:05d}-{index}", "does not fit {slug}"),
        ("{index!r}", "conversion"),
        ("{index:{n}}", "nested"),
        ("{id.upper}", "unknown field"),
        ("", "empty"),
    ],
)
def test_bad_templates_are_refused(template: str, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        validate_template(template)
    assert fragment in str(info.value)


def test_default_template_renders_padded_index_and_slug() -> None:
    assert render_filename(DEFAULT_TEMPLATE, FIELDS, ext="png", n=1, outputs=1) == (
        "00007-a-fox-in-snow.png"
    )


def test_extension_is_appended_when_the_template_has_none() -> None:
    assert render_filename("{id}", FIELDS, ext="webp", n=1, outputs=1) == "fox.webp"


def test_several_outputs_get_a_one_based_number_before_the_extension() -> None:
    names = [
        render_filename(DEFAULT_TEMPLATE, FIELDS, ext="png", n=n, outputs=3) for n in (1, 2, 3)
    ]
    assert names == [
        "00007-a-fox-in-snow-1.png",
        "00007-a-fox-in-snow-2.png",
        "00007-a-fox-in-snow-3.png",
    ]


def test_explicit_n_is_not_added_twice() -> None:
    assert render_filename("{id}_{n}.{ext}", FIELDS, ext="jpg", n=2, outputs=2) == "fox_2.jpg"


def test_one_output_gets_no_number() -> None:
    assert render_filename("{id}", FIELDS, ext="png", n=1, outputs=1) == "fox.png"


def test_missing_or_none_fields_render_empty() -> None:
    assert render_filename(
        "{index}-{seed}", {"index": 1, "seed": None}, ext="png", n=1, outputs=1
    ) == ("1-.png")
    assert (
        render_filename("{index}-{seed:05d}", {"index": 1}, ext="png", n=1, outputs=1) == "1-.png"
    )


def test_hostile_field_values_cannot_escape_the_folder() -> None:
    fields = {**FIELDS, "id": "../../etc/passwd", "model": "a\\b:c\x00d"}
    name = render_filename("{id}-{model}", fields, ext="png", n=1, outputs=1)
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert not name.startswith(".")
    assert name.endswith(".png")


def test_a_name_of_only_dots_becomes_image() -> None:
    assert render_filename("{id}", {"id": ".."}, ext="png", n=1, outputs=1) == "image.png"


def test_long_names_are_cut_to_the_byte_limit_keeping_the_extension() -> None:
    fields = {**FIELDS, "id": "é" * 300}
    name = render_filename("{id}", fields, ext="png", n=1, outputs=1)
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES
    assert name.endswith(".png")
    name.encode("utf-8").decode("utf-8")  # not cut in the middle of a character


def test_job_fields_fall_back_to_the_key_for_id_and_flatten_the_model() -> None:
    job = JobSpec(
        key="h00000000000000000000",
        index=3,
        model="black-forest-labs/flux-1.1-pro",
        input={"prompt": "a fox"},
        meta={"prompt": "a fox", "id": None, "variant": 1, "seed": None, "slug": "a-fox"},
    )
    fields = job_fields("lanterns", job)
    assert fields["id"] == "h00000000000000000000"
    assert fields["model"] == "black-forest-labs-flux-1.1-pro"
    assert render_filename("{campaign}-{id}-{variant}", fields, ext="png", n=1, outputs=1) == (
        "lanterns-h00000000000000000000-1.png"
    )


_template_text = st.text(
    alphabet=st.sampled_from(list(string.ascii_letters + string.digits + "-_. /\\{}:0d")),
    max_size=30,
)


@settings(max_examples=200, deadline=None)
@given(
    template=_template_text,
    value=st.text(max_size=300),
    ext=st.text(max_size=20),
    n=st.integers(min_value=1, max_value=50),
)
def test_any_valid_template_and_any_values_give_one_safe_name(
    template: str, value: str, ext: str, n: int
) -> None:
    try:
        validate_template(template)
    except ValueError:
        template = DEFAULT_TEMPLATE
    fields = {**FIELDS, "id": value, "slug": value, "model": value, "campaign": value}
    name = render_filename(template, fields, ext=ext, n=n, outputs=n)
    assert name
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert not name.startswith(".")
    assert name not in (".", "..")
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES


def test_image_field_is_the_input_images_name() -> None:
    from runner.campaign import JobSpec
    from runner.naming import job_fields

    job = JobSpec(
        key="k",
        index=3,
        model="flux-kontext-pro",
        input={},
        meta={"prompt": "make it snow", "image": "photos/Harbour View.PNG"},
    )
    fields = job_fields("c", job)
    assert fields["image"] == "harbour-view"
    assert render_filename("{index:03d}-{image}.{ext}", fields, ext="png", n=1, outputs=1) == (
        "003-harbour-view.png"
    )


def test_the_default_template_never_names_two_jobs_alike() -> None:
    """The loader skips its uniqueness check for the default template: each name begins with
    the job's own index and a dash, whatever the slug (digits, dashes, case, a huge index)."""
    from runner.naming import DEFAULT_TEMPLATE, render_filename

    slugs = ["", "0", "0-x", "1a", "-", "A", "a", "x" * 300, "00001-a"]
    owner: dict[str, int] = {}
    indexes = [*range(1, 200), 9_999, 10_000, 99_999, 100_000, 100_001, 1_000_000]
    for index in indexes:
        for slug in slugs:
            fields = {"index": index, "slug": slug}
            name = render_filename(DEFAULT_TEMPLATE, fields, ext="png", n=1, outputs=1)
            assert owner.setdefault(name.casefold(), index) == index, name
