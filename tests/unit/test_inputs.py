"""Inputs beyond a prompt: local image files, image folders, model matrices and the reuse flag.

Images are real PNG, JPEG, WebP and GIF files written with Pillow into each test's folder.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import random
import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from runner.inputs import (
    IMAGE_FIELDS,
    FileChangedError,
    find_files,
    key_view,
    make_marker,
    materialize,
    sniff,
)
from runner.jobfile import load_jobfile
from runner.naming import job_fields, render_filename
from tests.unit.test_jobfile import HEAD, error, load, prompts_of

REPLICATE_HEAD = "campaign: c\nprovider: replicate\nmodel: black-forest-labs/flux-kontext-pro\n"


def image(
    path: Path, fmt: str = "PNG", size: tuple[int, int] = (8, 8), colour: str = "red"
) -> bytes:
    """Write a small real image; returns its bytes."""
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=fmt)
    data = buffer.getvalue()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def noise_png(path: Path, side: int) -> bytes:
    """A PNG that compresses badly, to reach a size."""
    rng = random.Random(side)
    img = Image.frombytes(
        "RGB", (side, side), bytes(rng.getrandbits(8) for _ in range(side**2 * 3))
    )
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- local image files ---------------------------------------------------------------------------


def test_a_local_image_in_input_becomes_a_marker(tmp_path: Path) -> None:
    data = image(tmp_path / "photos" / "cat.png")
    campaign = load(tmp_path, HEAD + "input: {input_image: photos/cat.png}\nprompts: [a]\n")
    marker = campaign.jobs[0].input["input_image"]
    assert marker == {
        "$file": str((tmp_path / "photos" / "cat.png").resolve()),
        "sha256": sha(data),
        "bytes": len(data),
        "mime": "image/png",
    }
    assert find_files(campaign.jobs[0].input) == [marker]


def test_images_in_prompt_mappings_and_prompts_files(tmp_path: Path) -> None:
    jpeg = image(tmp_path / "a.jpg", "JPEG")
    gif = image(tmp_path / "sub" / "b.gif", "GIF")
    webp = image(tmp_path / "c.webp", "WEBP")
    jsonl = '{"prompt": "two", "image_prompt": "sub/b.gif"}\n'
    csv_text = "prompt,mask\nthree,c.webp\n"
    text = HEAD + "prompts:\n  - {prompt: one, control_image: a.jpg}\nprompts_file: FILE\n"
    campaign = load(tmp_path, text.replace("FILE", "p.jsonl"), p_jsonl=jsonl)
    one, two = campaign.jobs
    assert (one.input["control_image"]["mime"], one.input["control_image"]["sha256"]) == (
        "image/jpeg",
        sha(jpeg),
    )
    assert (two.input["image_prompt"]["mime"], two.input["image_prompt"]["sha256"]) == (
        "image/gif",
        sha(gif),
    )
    campaign = load(tmp_path, text.replace("FILE", "p.csv"), p_csv=csv_text)
    assert campaign.jobs[1].input["mask"]["mime"] == "image/webp"
    assert campaign.jobs[1].input["mask"]["sha256"] == sha(webp)


def test_urls_pass_through_and_lists_mix_urls_and_files(tmp_path: Path) -> None:
    image(tmp_path / "ref.png")
    data_url = "data:image/png;base64,iVBORw0KGgo="
    text = HEAD + textwrap.dedent(f"""\
        input:
          input_image: https://example.com/a.png
          image: HTTP://EXAMPLE.COM/b
          control_image: "{data_url}"
          input_images: [ref.png, "https://example.com/c.png"]
          width: ref.png
        prompts: [a]
        """)
    job = load(tmp_path, text).jobs[0]
    assert job.input["input_image"] == "https://example.com/a.png"
    assert job.input["image"] == "HTTP://EXAMPLE.COM/b"
    assert job.input["control_image"] == data_url
    assert job.input["input_images"][0]["mime"] == "image/png"
    assert job.input["input_images"][1] == "https://example.com/c.png"
    assert job.input["width"] == "ref.png"  # not an image field: passed as text


def test_a_prompt_may_clear_a_default_image_with_null(tmp_path: Path) -> None:
    image(tmp_path / "a.png")
    text = HEAD + "input: {image: a.png}\nprompts: [one, {prompt: two, image: null}]\n"
    one, two = load(tmp_path, text).jobs
    assert one.input["image"]["mime"] == "image/png" and two.input["image"] is None


def test_a_missing_file_names_field_line_and_path(tmp_path: Path) -> None:
    message = error(
        tmp_path, HEAD + "input:\n  width: 5\n  input_image: photos/nope.png\nprompts: [a]\n"
    )
    assert "jobs.yaml, line 6, field `input.input_image`" in message
    assert "'photos/nope.png'" in message and "neither" in message and "URL" in message


def test_a_missing_file_in_a_list_in_a_prompt(tmp_path: Path) -> None:
    image(tmp_path / "a.png")
    text = HEAD + "prompts:\n  - prompt: x\n    input_images:\n      - a.png\n      - b.png\n"
    message = error(tmp_path, text)
    assert "line 8, field `prompts[0].input_images[1]`" in message and "'b.png'" in message


def test_a_missing_file_in_a_prompts_file(tmp_path: Path) -> None:
    jsonl = '"fine"\n{"prompt": "x", "input_image": "gone.jpg"}\n'
    message = error(tmp_path, HEAD + "prompts_file: p.jsonl\n", p_jsonl=jsonl)
    assert "p.jsonl (prompts_file of" in message and "line 2" in message
    assert "field `input_image`" in message and "'gone.jpg'" in message


@pytest.mark.parametrize(
    ("setup", "value", "fragment"),
    [
        (lambda d: (d / "notes.png").write_text("not really"), "notes.png", "not a PNG"),
        (lambda d: (d / "empty.png").write_bytes(b""), "empty.png", "not a PNG"),
        (lambda d: (d / "photos").mkdir(), "photos", "folder"),
        (lambda d: None, "ftp://example.com/a.png", "neither http(s) nor data:"),
        (lambda d: None, "''", "empty"),
        (lambda d: None, "42", "expected an image"),
        (lambda d: None, "{a: 1}", "expected an image"),
    ],
)
def test_values_that_are_not_images(tmp_path: Path, setup: Any, value: str, fragment: str) -> None:
    setup(tmp_path)
    message = error(tmp_path, HEAD + f"input: {{mask: {value}}}\nprompts: [a]\n")
    assert "line 4, field `input.mask`" in message and fragment in message


@pytest.mark.parametrize("target", ["../outside.png", "ABSOLUTE", "link.png"])
def test_an_image_outside_the_job_folder_is_refused(tmp_path: Path, target: str) -> None:
    outside = tmp_path / "outside.png"
    image(outside)
    folder = tmp_path / "job"
    folder.mkdir()
    (folder / "link.png").symlink_to(outside)
    value = str(outside) if target == "ABSOLUTE" else target
    message = error(folder, HEAD + f"prompts:\n  - {{prompt: a, input_image: '{value}'}}\n")
    assert "line 5, field `prompts[0].input_image`" in message and "escapes the folder" in message


def test_a_user_written_marker_is_refused(tmp_path: Path) -> None:
    text = HEAD + "input: {extra: {$file: /etc/passwd, sha256: x}}\nprompts: [a]\n"
    message = error(tmp_path, text)
    assert "`input.extra.$file`" in message and "reserved" in message


def test_size_limits_depend_on_the_style(tmp_path: Path) -> None:
    data = noise_png(tmp_path / "big.png", 320)
    assert 256 * 1024 < len(data) < 20 * 1024 * 1024
    message = error(tmp_path, REPLICATE_HEAD + "input: {input_image: big.png}\nprompts: [a]\n")
    assert "field `input.input_image`" in message and "'big.png'" in message
    assert "256 KiB" in message and "URL" in message
    # BFL style takes base64 up to 20 MiB: the same file is fine.
    campaign = load(tmp_path, HEAD + "input: {input_image: big.png}\nprompts: [a]\n")
    assert campaign.jobs[0].input["input_image"]["bytes"] == len(data)


def test_replicate_style_takes_a_file_up_to_the_limit(tmp_path: Path) -> None:
    image(tmp_path / "small.png")
    job = load(tmp_path, REPLICATE_HEAD + "input: {image_input: [small.png]}\nprompts: [a]\n").jobs[
        0
    ]
    assert job.input["image_input"][0]["mime"] == "image/png"


# --- keys ----------------------------------------------------------------------------------------


def test_the_key_follows_the_image_content_not_its_place(tmp_path: Path) -> None:
    job_dir = tmp_path / "one"
    image(job_dir / "p.png", colour="red")
    text = HEAD + "input: {input_image: p.png}\nprompts: [a, {prompt: b, id: b}]\n"
    first = load(job_dir, text)
    moved_dir = tmp_path / "two"
    shutil.copytree(job_dir, moved_dir)
    moved = load_jobfile(moved_dir / "jobs.yaml")
    assert [job.key for job in moved.jobs] == [job.key for job in first.jobs]
    assert moved.jobs[0].input["input_image"]["$file"].startswith(str(moved_dir.resolve()))
    image(job_dir / "p.png", colour="blue")
    changed = load_jobfile(job_dir / "jobs.yaml")
    assert changed.jobs[0].key != first.jobs[0].key
    assert changed.jobs[1].key == "b"  # an id stays the key, whatever the image holds


def test_key_view_drops_only_the_path() -> None:
    marker = {"$file": "/x/a.png", "sha256": "ab", "bytes": 3, "mime": "image/png"}
    view = key_view({"prompt": "p", "input_images": [marker, "https://u"]})
    assert view == {
        "prompt": "p",
        "input_images": [{"sha256": "ab", "bytes": 3, "mime": "image/png"}, "https://u"],
    }


# --- make_marker and materialize ----------------------------------------------------------------


def test_make_marker_and_sniff(tmp_path: Path) -> None:
    data = image(tmp_path / "a.jpg", "JPEG")
    marker = make_marker(tmp_path / "a.jpg")
    assert marker == {
        "$file": str((tmp_path / "a.jpg").resolve()),
        "sha256": sha(data),
        "bytes": len(data),
        "mime": "image/jpeg",
    }
    assert sniff(b"GIF89a......") == "image/gif"
    assert sniff(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "image/webp"
    assert sniff(b"RIFF\x00\x00\x00\x00WAVEfmt ") is None
    assert sniff(b"") is None


def test_materialize_bfl_gives_plain_base64(tmp_path: Path) -> None:
    data = image(tmp_path / "a.png")
    marker = make_marker(tmp_path / "a.png")
    given = {"prompt": "p", "input_image": marker, "input_images": ["https://u", marker], "w": 5}
    sent = materialize(given, "bfl")
    assert base64.b64decode(sent["input_image"], validate=True) == data
    assert sent["input_images"][0] == "https://u"
    assert base64.b64decode(sent["input_images"][1], validate=True) == data
    assert (sent["prompt"], sent["w"]) == ("p", 5)
    assert given["input_image"] is marker  # the stored input is left as it was


def test_materialize_replicate_gives_a_data_url(tmp_path: Path) -> None:
    data = image(tmp_path / "a.jpg", "JPEG")
    sent = materialize({"image_input": [make_marker(tmp_path / "a.jpg")]}, "replicate")
    prefix = "data:image/jpeg;base64,"
    assert sent["image_input"][0].startswith(prefix)
    assert base64.b64decode(sent["image_input"][0][len(prefix) :], validate=True) == data


def test_materialize_without_markers_is_an_equal_copy() -> None:
    given = {"prompt": "p", "extra": {"a": [1, 2]}}
    assert materialize(given, "replicate") == given
    assert find_files(given) == []


def test_materialize_refuses_a_changed_or_missing_file(tmp_path: Path) -> None:
    image(tmp_path / "a.png", colour="red")
    marker = make_marker(tmp_path / "a.png")
    image(tmp_path / "a.png", colour="green")
    with pytest.raises(FileChangedError, match="changed"):
        materialize({"image": marker}, "bfl")
    os.remove(tmp_path / "a.png")
    with pytest.raises(FileChangedError, match="gone"):
        materialize({"image": marker}, "replicate")


def test_a_loaded_job_materializes_to_the_file_bytes(tmp_path: Path) -> None:
    data = image(tmp_path / "a.png")
    job = load(tmp_path, HEAD + "input: {input_image: a.png}\nprompts: [a]\n").jobs[0]
    assert base64.b64decode(materialize(job.input, "bfl")["input_image"]) == data


# --- folders ---------------------------------------------------------------------------------


def test_a_folder_expands_every_prompt_over_its_images_in_name_order(tmp_path: Path) -> None:
    image(tmp_path / "photos" / "b.png")
    image(tmp_path / "photos" / "a.jpg", "JPEG")
    image(tmp_path / "photos" / "C.webp", "WEBP")
    image(tmp_path / "photos" / ".hidden.png")
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    (tmp_path / "photos" / "sub").mkdir()
    text = HEAD + "images: {dir: photos, field: input_image}\nprompts: [make it night, add snow]\n"
    campaign = load(tmp_path, text)
    assert len(campaign.jobs) == 2 * 3
    assert [job.meta["image"] for job in campaign.jobs] == [
        "photos/C.webp",
        "photos/a.jpg",
        "photos/b.png",
    ] * 2
    assert prompts_of(campaign) == ["make it night"] * 3 + ["add snow"] * 3
    assert [job.input["input_image"]["mime"] for job in campaign.jobs[:3]] == [
        "image/webp",
        "image/jpeg",
        "image/png",
    ]
    assert len({job.key for job in campaign.jobs}) == 6
    assert [job.index for job in campaign.jobs] == list(range(1, 7))


def test_a_pattern_picks_files_by_name_ignoring_case(tmp_path: Path) -> None:
    image(tmp_path / "in" / "one.JPG", "JPEG")
    image(tmp_path / "in" / "two.png")
    text = HEAD + "images: {dir: in, field: input_image, pattern: '*.jpg'}\nprompts: [x]\n"
    assert [job.meta["image"] for job in load(tmp_path, text).jobs] == ["in/one.JPG"]
    (tmp_path / "in" / "fake.jpg").write_text("text")
    message = error(tmp_path, text)
    assert "line 4, field `images.dir`" in message and "'in/fake.jpg'" in message


def test_list_fields_get_a_list_of_one_and_ids_get_one_key_per_image(tmp_path: Path) -> None:
    image(tmp_path / "p" / "a.png")
    image(tmp_path / "p" / "b.png", colour="blue")
    text = HEAD + "images: {dir: p, field: input_images}\nprompts: [{prompt: x, id: fox}]\n"
    campaign = load(tmp_path, text)
    assert all(len(job.input["input_images"]) == 1 for job in campaign.jobs)
    keys = [job.key for job in campaign.jobs]
    assert len(set(keys)) == 2 and all(key.startswith("fox~") for key in keys)
    # Another image added later keeps the earlier ones' keys.
    image(tmp_path / "p" / "0.png", colour="green")
    assert set(keys) < {job.key for job in load_jobfile(tmp_path / "jobs.yaml").jobs}


def test_names_of_folder_jobs_are_unique_with_index(tmp_path: Path) -> None:
    image(tmp_path / "p" / "a.png")
    image(tmp_path / "p" / "b.png", colour="blue")
    text = HEAD + "images: {dir: p, field: image}\nprompts: [x]\n"
    campaign = load(tmp_path, text)
    names = {
        render_filename("{index}-{slug}", job_fields("c", job), ext="png", n=1, outputs=1)
        for job in campaign.jobs
    }
    assert names == {"1-x.png", "2-x.png"}


@pytest.mark.parametrize(
    ("images", "fragments"),
    [
        ("{dir: empty, field: input_image}", ["`images.dir`", "no PNG, JPEG, WebP or GIF"]),
        ("{dir: missing, field: input_image}", ["`images.dir`", "does not exist"]),
        ("{dir: ../elsewhere, field: input_image}", ["`images.dir`", "escapes"]),
        ("{dir: file.txt, field: input_image}", ["`images.dir`", "not a folder"]),
        ("{dir: empty, field: prompt_image}", ["`images.field`", "not an image field"]),
        ("{dir: empty, field: input_image, pattern: 'a/*.png'}", ["`images.pattern`"]),
        ("{dir: empty}", ["`images.field`", "missing"]),
        ("{dir: empty, field: image, size: 3}", ["`images.size`", "unknown field"]),
        ("photos", ["`images`", "mapping"]),
    ],
)
def test_bad_images_folders(tmp_path: Path, images: str, fragments: list[str]) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    (tmp_path / "file.txt").write_text("x")
    message = error(tmp_path, HEAD + f"images: {images}\nprompts: [a]\n")
    for fragment in fragments:
        assert fragment in message


def test_the_folder_field_may_not_be_set_elsewhere(tmp_path: Path) -> None:
    image(tmp_path / "p" / "a.png")
    head = HEAD + "images: {dir: p, field: input_image}\n"
    message = error(tmp_path, head + "input: {input_image: p/a.png}\nprompts: [x]\n")
    assert "`input.input_image`" in message and "`images`" in message
    message = error(tmp_path, head + "prompts: [x, {prompt: y, input_image: 'https://u'}]\n")
    assert "`prompts[1].input_image`" in message


def test_a_folder_image_too_big_for_replicate(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    noise_png(tmp_path / "p" / "big.png", 320)
    message = error(
        tmp_path, REPLICATE_HEAD + "images: {dir: p, field: input_image}\nprompts: [x]\n"
    )
    assert "`images.dir`" in message and "'p/big.png'" in message and "256 KiB" in message


# --- models ----------------------------------------------------------------------------------


def test_models_run_every_prompt_on_each_model(tmp_path: Path) -> None:
    text = (
        "campaign: c\nprovider: bfl\nmodels: [flux-pro-1.1, flux-dev]\n"
        "prompts: [{prompt: a fox, id: fox, variants: 2}, a hare]\n"
    )
    campaign = load(tmp_path, text)
    assert [(job.key, job.model) for job in campaign.jobs[:4]] == [
        ("fox@flux-pro-1.1", "flux-pro-1.1"),
        ("fox.v1@flux-pro-1.1", "flux-pro-1.1"),
        ("fox@flux-dev", "flux-dev"),
        ("fox.v1@flux-dev", "flux-dev"),
    ]
    hares = campaign.jobs[4:]
    assert [job.model for job in hares] == ["flux-pro-1.1", "flux-dev"]
    assert hares[0].key != hares[1].key and hares[0].key.startswith("h")
    assert hares[0].input == hares[1].input
    # One model in the list is the same as `model`: the same keys.
    single = load(tmp_path, text.replace("models: [flux-pro-1.1, flux-dev]", "models: [flux-dev]"))
    plain = load(tmp_path, text.replace("models: [flux-pro-1.1, flux-dev]", "model: flux-dev"))
    assert [job.key for job in single.jobs] == [job.key for job in plain.jobs]
    assert [job.key for job in plain.jobs][:2] == ["fox", "fox.v1"]


def test_file_names_must_tell_models_apart(tmp_path: Path) -> None:
    text = (
        "campaign: c\nprovider: bfl\nmodels: [flux-dev, flux-pro]\nprompts: [{prompt: a, id: a}]\n"
    )
    message = error(tmp_path, text + "output: {name: '{id}'}\n")
    assert "`output.name`" in message and "same file name" in message
    campaign = load(tmp_path, text + "output: {name: '{id}-{model}'}\n")
    assert len(campaign.jobs) == 2


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (
            "provider: bfl\nmodel: flux-dev\nmodels: [flux-pro]\n",
            ["line 4, field `models`", "both"],
        ),
        (
            "provider: replicate\nversion: " + "a" * 64 + "\nmodels: [a/b]\n",
            ["field `models`", "`version`"],
        ),
        ("provider: bfl\nmodels: []\n", ["field `models`", "list"]),
        ("provider: bfl\nmodels: flux-dev\n", ["field `models`", "list"]),
        ("provider: bfl\nmodels: [flux-dev, a/b]\n", ["line 3, field `models[1]`", "endpoint"]),
        ("provider: bfl\nmodels: [flux-dev, 7]\n", ["field `models[1]`", "a number"]),
        ("provider: replicate\nmodels: [a/b, flux-dev]\n", ["field `models[1]`", "owner/name"]),
        ("provider: bfl\nmodels: [flux-dev, flux-dev]\n", ["field `models[1]`", "twice"]),
    ],
)
def test_bad_models(tmp_path: Path, text: str, fragments: list[str]) -> None:
    message = error(tmp_path, "campaign: c\n" + text + "prompts: [a]\n")
    for fragment in fragments:
        assert fragment in message


# --- everything at once, and reuse -----------------------------------------------------------


def test_templates_images_models_and_variants_multiply(tmp_path: Path) -> None:
    image(tmp_path / "p" / "a.png")
    image(tmp_path / "p" / "b.png", colour="blue")
    text = (
        "campaign: c\nprovider: bfl\nmodels: [flux-kontext-pro, flux-kontext-max]\n"
        "images: {dir: p, field: input_image}\nvars: {season: [winter, summer, autumn]}\n"
        "variants: 2\nprompts: ['make it {season}', {prompt: 'as {season}', id: s}]\n"
    )
    campaign = load(tmp_path, text)
    assert len(campaign.jobs) == 2 * 3 * 2 * 2 * 2
    assert len({job.key for job in campaign.jobs}) == len(campaign.jobs)
    first = campaign.jobs[0]
    assert first.meta["vars"] == {"season": "winter"} and first.meta["image"] == "p/a.png"
    assert first.model == "flux-kontext-pro"
    ids = [job.key for job in campaign.jobs if job.meta["id"] == "s"]
    assert all("~" in key and key.count("@") == 1 for key in ids)


def test_reuse_goes_into_every_jobs_meta_only_when_true(tmp_path: Path) -> None:
    campaign = load(tmp_path, HEAD + "reuse: true\nprompts: [a, b]\n")
    assert all(job.meta["reuse"] is True for job in campaign.jobs)
    for value in ("false", "null"):
        campaign = load(tmp_path, HEAD + f"reuse: {value}\nprompts: [a]\n")
        assert "reuse" not in campaign.jobs[0].meta
    message = error(tmp_path, HEAD + "reuse: 'yes'\nprompts: [a]\n")
    assert "line 4, field `reuse`" in message and "true or false" in message


def test_image_fields_are_the_documented_ones() -> None:
    assert {
        "input_image",
        "input_image_2",
        "input_image_3",
        "input_image_4",
        "input_image_5",
        "input_image_6",
        "input_image_7",
        "input_image_8",
        "input_images",
        "image",
        "mask",
        "control_image",
        "image_prompt",
        "image_input",
        "reference_images",
        "img_cond_path",
        "start_image",
        "first_frame_image",
    } == IMAGE_FIELDS
    example = (Path(__file__).resolve().parents[2] / "jobs.example.yaml").read_text()
    numbered = {f"input_image_{i}" for i in range(2, 9)}
    assert all(name in example for name in IMAGE_FIELDS - numbered)
    assert "input_image_2 .. input_image_8" in example


def test_identical_images_make_one_job(tmp_path: Path) -> None:
    # The key follows the content: the same photo twice is the same request, made once.
    image(tmp_path / "p" / "a.png")
    shutil.copy(tmp_path / "p" / "a.png", tmp_path / "p" / "copy.png")
    campaign = load(tmp_path, HEAD + "images: {dir: p, field: image}\nprompts: [x]\n")
    assert [job.meta["image"] for job in campaign.jobs] == ["p/a.png"]
    assert campaign.duplicates == 1


# --- the examples ------------------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_the_edit_photos_example_loads() -> None:
    campaign = load_jobfile(EXAMPLES / "edit-photos.yaml")
    assert [job.meta["image"] for job in campaign.jobs] == [
        "photos/harbour.png",
        "photos/lighthouse.png",
    ] * 2
    assert all(job.input["input_image"]["mime"] == "image/png" for job in campaign.jobs)
    assert [job.key.split("~")[0] for job in campaign.jobs[2:]] == ["watercolor"] * 2


def test_the_styles_matrix_example_loads() -> None:
    campaign = load_jobfile(EXAMPLES / "styles-matrix.yaml")
    assert len(campaign.jobs) == 18
    assert {job.model for job in campaign.jobs} == {"flux-pro-1.1", "flux-dev"}
    assert campaign.jobs[0].input["prompt"] == "a fox in deep snow, ink wash"
    scarves = [job for job in campaign.jobs if job.meta["id"] == "scarf"]
    assert len(scarves) == 6 and all(job.key.startswith("scarf~") for job in scarves)
    assert scarves[0].input["prompt"].endswith("storybook illustration")


def test_has_files_finds_a_marker_anywhere_and_nothing_else(tmp_path: Path) -> None:
    from runner.inputs import has_files

    image(tmp_path / "a.png", "PNG")
    marker = make_marker(tmp_path / "a.png")
    assert has_files({"input_image": marker})
    assert has_files({"a": [{"b": [1, marker]}]})
    assert not has_files({"prompt": "p", "image": "https://x/a.png", "n": [1, {"k": "v"}]})
    assert not has_files({"$file": 3})  # only a path is a marker
