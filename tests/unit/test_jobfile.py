"""The job-file loader: file formats, expansion into jobs with stable keys, actionable errors.

Also the presets and durations the job file is made of.
"""

from __future__ import annotations

import hashlib
import json
import os
import string
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.campaign import Campaign
from runner.durations import format_duration, parse_duration
from runner.errors import InputError
from runner.jobfile import load_jobfile
from runner.presets import PRESETS, default_limits, resolve_provider, simulated

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "jobfiles"
HEAD = "campaign: c\nprovider: bfl\nmodel: flux-dev\n"


def write(folder: Path, text: str, name: str = "jobs.yaml") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load(folder: Path, text: str, **files: str) -> Campaign:
    for name, content in files.items():
        write(folder, content, name.replace("_", "."))
    return load_jobfile(write(folder, text))


def error(folder: Path, text: str, **files: str) -> str:
    with pytest.raises(InputError) as info:
        load(folder, text, **files)
    message = str(info.value)
    assert "\n" not in message, "an InputError is one paragraph"
    return message


def prompts_of(campaign: Campaign) -> list[str]:
    return [job.input["prompt"] for job in campaign.jobs]


# --- the example ---------------------------------------------------------------------------


def test_example_job_file_loads() -> None:
    campaign = load_jobfile(REPO / "jobs.example.yaml")
    example_prompts = [
        line
        for line in (REPO / "prompts.example.txt").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert len(example_prompts) == 12
    # 1 inline prompt + 1 inline prompt with 2 variants + the prompts file.
    assert len(campaign.jobs) == 1 + 2 + 12
    assert len({job.key for job in campaign.jobs}) == len(campaign.jobs)
    assert [job.index for job in campaign.jobs] == list(range(1, 16))
    assert campaign.duplicates == 0
    settings_ = campaign.settings
    assert os.path.isabs(settings_.output_dir)
    assert Path(settings_.output_dir) == REPO / "out" / "example"
    assert settings_.provider.name == "bfl"
    assert settings_.limits.max_in_flight == 8
    assert settings_.limits.creates_per_minute == 600  # from the preset
    assert settings_.deadline_seconds == 1800
    assert all(job.model == "flux-pro-1.1" for job in campaign.jobs)
    assert all(job.input["output_format"] == "png" for job in campaign.jobs)
    sunflowers = [job for job in campaign.jobs if job.meta["id"] == "sunflowers"]
    assert [job.key for job in sunflowers] == ["sunflowers", "sunflowers.v1"]
    assert [job.input["seed"] for job in sunflowers] == [7, 8]
    assert sunflowers[0].input["width"] == 768 and sunflowers[0].input["height"] == 512
    assert prompts_of(campaign)[3:] == example_prompts  # inline first, then the file in order


# --- merging and variants ----------------------------------------------------------------------


def test_overrides_deep_merge_over_defaults_without_leaking(tmp_path: Path) -> None:
    campaign = load(
        tmp_path,
        HEAD
        + textwrap.dedent("""\
        input:
          width: 1024
          height: 768
          extra: {a: 1, b: 2}
        prompts:
          - {prompt: first, width: 512, extra: {b: 3}}
          - second
        """),
    )
    first, second = campaign.jobs
    assert first.input == {
        "prompt": "first",
        "width": 512,
        "height": 768,
        "extra": {"a": 1, "b": 3},
    }
    assert second.input == {
        "prompt": "second",
        "width": 1024,
        "height": 768,
        "extra": {"a": 1, "b": 2},
    }
    assert first.meta == {
        "prompt": "first",
        "id": None,
        "variant": 0,
        "seed": None,
        "slug": "first",
        "source": "jobs.yaml:9",
    }


def test_variants_without_seed_leave_the_seed_to_the_provider(tmp_path: Path) -> None:
    campaign = load(tmp_path, HEAD + "variants: 3\nprompts: [a fox]\n")
    assert len(campaign.jobs) == 3
    assert all("seed" not in job.input for job in campaign.jobs)
    assert [job.meta["variant"] for job in campaign.jobs] == [0, 1, 2]
    assert [job.meta["seed"] for job in campaign.jobs] == [None, None, None]
    assert len({job.key for job in campaign.jobs}) == 3


def test_variants_with_a_seed_count_up_from_it(tmp_path: Path) -> None:
    campaign = load(tmp_path, HEAD + "input: {seed: 7}\nvariants: 3\nprompts: [a fox]\n")
    assert [job.input["seed"] for job in campaign.jobs] == [7, 8, 9]
    assert [job.meta["seed"] for job in campaign.jobs] == [7, 8, 9]


def test_a_list_of_seeds_sets_each_seed(tmp_path: Path) -> None:
    campaign = load(tmp_path, HEAD + "input: {seed: 1}\nvariants: [11, 22, 33]\nprompts: [a fox]\n")
    assert [job.input["seed"] for job in campaign.jobs] == [11, 22, 33]


def test_per_prompt_variants_override_the_default(tmp_path: Path) -> None:
    campaign = load(
        tmp_path, HEAD + "variants: 2\nprompts:\n  - one\n  - {prompt: two, variants: [5]}\n"
    )
    assert prompts_of(campaign) == ["one", "one", "two"]
    assert campaign.jobs[2].input["seed"] == 5


def test_key_of_a_prompt_without_id_is_the_documented_hash(tmp_path: Path) -> None:
    campaign = load(tmp_path, HEAD + "input: {width: 512}\nvariants: 2\nprompts: [a fox]\n")
    first, second = campaign.jobs

    def expected(obj: dict[str, Any]) -> str:
        canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"))
        return "h" + hashlib.sha256(canonical.encode()).hexdigest()[:20]

    effective = {"prompt": "a fox", "width": 512}
    assert first.key == expected({"model": "flux-dev", "input": effective})
    assert second.key == expected({"model": "flux-dev", "input": effective, "variant": 1})


def test_keys_with_ids(tmp_path: Path) -> None:
    campaign = load(
        tmp_path,
        HEAD + "prompts:\n  - {prompt: a fox, id: fox, variants: 3}\n  - {prompt: b, id: 7}\n",
    )
    assert [job.key for job in campaign.jobs] == ["fox", "fox.v1", "fox.v2", "7"]
    assert campaign.jobs[3].meta["id"] == "7"


def test_appending_prompts_keeps_earlier_keys_and_indices(tmp_path: Path) -> None:
    before = load(tmp_path, HEAD + "prompts_file: p.txt\n", p_txt="one\ntwo\n")
    after = load(tmp_path, HEAD + "prompts_file: p.txt\n", p_txt="one\ntwo\nthree\nfour\n")
    old = [(job.key, job.index) for job in before.jobs]
    assert [(job.key, job.index) for job in after.jobs][: len(old)] == old
    assert len(after.jobs) == 4


@pytest.mark.parametrize("seed", ["", "input: {seed: 5}\n"])
def test_raising_variants_keeps_earlier_keys(tmp_path: Path, seed: str) -> None:
    text = HEAD + seed + "variants: N\nprompts: [a fox, {prompt: a lantern, id: lantern}]\n"
    before = load(tmp_path, text.replace("N", "2"))
    after = load(tmp_path, text.replace("N", "4"))
    assert len(after.jobs) == 8
    assert {job.key for job in before.jobs} <= {job.key for job in after.jobs}


def test_changing_a_prompt_changes_its_key_but_no_other(tmp_path: Path) -> None:
    before = load(tmp_path, HEAD + "prompts: [one, two]\n")
    after = load(tmp_path, HEAD + "prompts: [one, two!]\n")
    assert before.jobs[0].key == after.jobs[0].key
    assert before.jobs[1].key != after.jobs[1].key


def test_repeated_prompts_are_skipped_and_counted(tmp_path: Path) -> None:
    campaign = load(
        tmp_path, HEAD + "prompts: [a fox, a lantern]\nprompts_file: p.txt\n", p_txt="a fox\nnew\n"
    )
    assert prompts_of(campaign) == ["a fox", "a lantern", "new"]
    assert campaign.duplicates == 1
    assert [job.index for job in campaign.jobs] == [1, 2, 3]


def test_seeded_variants_that_repeat_another_prompt_count_as_duplicates(tmp_path: Path) -> None:
    text = (
        HEAD + "prompts:\n  - {prompt: a fox, seed: 1, variants: 2}\n  - {prompt: a fox, seed: 2}\n"
    )
    campaign = load(tmp_path, text)
    assert [job.input["seed"] for job in campaign.jobs] == [1, 2]
    assert campaign.duplicates == 1


def test_yaml_anchors_and_merge_keys_are_not_taken_for_repeated_keys(tmp_path: Path) -> None:
    text = HEAD + textwrap.dedent("""\
        prompts:
          - &common {prompt: a, width: 512, height: 512}
          - {<<: *common, prompt: b, width: 256}
        """)
    campaign = load(tmp_path, text)
    assert campaign.jobs[1].input == {"prompt": "b", "width": 256, "height": 512}


def test_limits_default_from_the_preset_and_merge(tmp_path: Path) -> None:
    campaign = load(
        tmp_path,
        "campaign: c\nprovider: deerapi-replicate\nmodel: owner/name\nprompts: [a]\n"
        "limits: {max_attempts: 2}\n",
    )
    limits = campaign.settings.limits
    assert (limits.max_in_flight, limits.creates_per_minute, limits.max_attempts) == (24, 120, 2)
    assert limits.create_burst is None  # runner.limits picks a few seconds' worth


def test_create_burst_is_taken_and_kept_with_the_campaign(tmp_path: Path) -> None:
    campaign = load(
        tmp_path,
        "campaign: c\nprovider: replicate\nmodel: owner/name\nprompts: [a]\n"
        "limits: {creates_per_minute: 200, create_burst: 200}\n",
    )
    assert campaign.settings.limits.create_burst == 200.0
    again = type(campaign.settings).from_dict(campaign.settings.to_dict())
    assert again.limits.create_burst == 200.0


def test_provider_mapping_and_version(tmp_path: Path) -> None:
    version = "owner/name:" + "ab" * 32
    campaign = load(
        tmp_path,
        f"""\
        campaign: c
        provider:
          style: replicate
          base_url: https://proxy.example.com/replicate/
          api_key_env: PROXY_KEY
        version: {version}
        prompts: [a]
        output: {{dir: /abs/out, name: "{{key}}"}}
        """,
    )
    provider = campaign.settings.provider
    assert provider.name == "custom"
    assert provider.base_url == "https://proxy.example.com/replicate"
    assert provider.auth == "bearer"
    assert campaign.jobs[0].model == version
    assert campaign.settings.output_dir == os.path.normpath("/abs/out")
    assert campaign.settings.filename_template == "{key}"


def test_default_output_dir_is_named_after_the_campaign(tmp_path: Path) -> None:
    campaign = load(tmp_path, HEAD + "prompts: [a]\n")
    assert campaign.settings.output_dir == str(tmp_path / "out" / "c")
    assert campaign.source == str(tmp_path / "jobs.yaml")


# --- errors ------------------------------------------------------------------------------------


def test_missing_campaign(tmp_path: Path) -> None:
    message = error(tmp_path, "provider: bfl\nmodel: flux-dev\nprompts: [a]\n")
    assert "jobs.yaml" in message and "`campaign`" in message and "missing" in message


def test_wrong_type_names_field_line_and_value(tmp_path: Path) -> None:
    message = error(tmp_path, HEAD + "prompts: [a]\nlimits:\n  max_in_flight: lots\n")
    assert "jobs.yaml, line 6, field `limits.max_in_flight`" in message
    assert "'lots'" in message and "whole number" in message


def test_unknown_field_suggests_the_right_one(tmp_path: Path) -> None:
    message = error(tmp_path, HEAD + "promts: [a]\n")
    assert "line 4" in message and "`promts`" in message and "Did you mean `prompts`" in message


def test_unknown_nested_field(tmp_path: Path) -> None:
    message = error(tmp_path, HEAD + "prompts: [a]\nlimits:\n  max_inflight: 3\n")
    assert "line 6, field `limits.max_inflight`" in message and "max_in_flight" in message


def test_unknown_preset_lists_the_known_ones(tmp_path: Path) -> None:
    message = error(tmp_path, "campaign: c\nprovider: bfx\nmodel: flux-dev\nprompts: [a]\n")
    assert "line 2, field `provider`" in message and "'bfx'" in message
    assert "replicate, bfl, deerapi-replicate, deerapi-flux, cometapi" in message


def test_bad_provider_mapping_field(tmp_path: Path) -> None:
    message = error(
        tmp_path,
        "campaign: c\nprovider: {preset: bfl, base_url: 'ftp://x'}\nmodel: m\nprompts: [a]\n",
    )
    assert "field `provider`" in message and "base_url" in message and "http" in message


def test_no_prompts_names_both_fields(tmp_path: Path) -> None:
    message = error(tmp_path, HEAD)
    assert "jobs.yaml" in message and "`prompts`" in message and "`prompts_file`" in message
    message = error(
        tmp_path, HEAD + "prompts: []\nprompts_file: p.txt\n", p_txt="# only a comment\n"
    )
    assert "no prompts" in message


@pytest.mark.parametrize("text", ["", "   \n", "# just a comment\n", "---\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    message = error(tmp_path, text)
    assert "jobs.yaml" in message and "empty" in message


def test_bad_yaml_gives_the_line(tmp_path: Path) -> None:
    message = error(tmp_path, HEAD + "prompts:\n  - a\n  - b: c: d\n")
    assert "jobs.yaml, line 6" in message and "not valid YAML" in message


def test_bad_utf8_in_the_job_file(tmp_path: Path) -> None:
    (tmp_path / "jobs.yaml").write_bytes(HEAD.encode() + b"prompts: [caf\xe9]\n")
    with pytest.raises(InputError, match=r"jobs\.yaml, line 4: .*UTF-8"):
        load_jobfile(tmp_path / "jobs.yaml")


def test_top_level_list(tmp_path: Path) -> None:
    message = error(tmp_path, "- campaign: c\n- provider: bfl\n")
    assert "jobs.yaml" in message and "top level is a list" in message


def test_missing_job_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_jobfile(tmp_path / "nope.yaml")
    with pytest.raises(InputError, match="folder"):
        load_jobfile(tmp_path)


def test_bad_template(tmp_path: Path) -> None:
    message = error(tmp_path, HEAD + "prompts: [a]\noutput:\n  name: '{index}-{prompt}'\n")
    assert "line 6, field `output.name`" in message and "{prompt}" in message


def test_template_that_escapes_the_folder(tmp_path: Path) -> None:
    message = error(tmp_path, HEAD + "prompts: [a]\noutput: {name: '../{index}'}\n")
    assert "`output.name`" in message


def test_template_giving_two_jobs_one_name_names_both_prompts(tmp_path: Path) -> None:
    text = HEAD + "prompts:\n  - {prompt: a fox, id: Fox}\n  - {prompt: a dog, id: fox}\n"
    message = error(tmp_path, text + "output: {name: '{id}.{ext}'}\n")
    assert "`output.name`" in message and "'a fox'" in message and "'a dog'" in message


def test_duplicate_ids_name_both_lines(tmp_path: Path) -> None:
    text = HEAD + "prompts:\n  - {prompt: a, id: x}\n  - b\n  - {prompt: c, id: x}\n"
    message = error(tmp_path, text)
    assert "'x'" in message and "line 5" in message and "line 7" in message


def test_duplicate_id_between_inline_and_file(tmp_path: Path) -> None:
    text = HEAD + "prompts: [{prompt: a, id: x}]\nprompts_file: p.csv\n"
    message = error(tmp_path, text, p_csv="prompt,id\nb,x\n")
    assert "'x'" in message and "p.csv" in message and "jobs.yaml" in message


def test_id_that_collides_with_a_variant_key(tmp_path: Path) -> None:
    text = HEAD + "prompts:\n  - {prompt: a, id: fox, variants: 2}\n  - {prompt: b, id: fox.v1}\n"
    message = error(tmp_path, text)
    assert "'fox.v1'" in message and "Rename" in message


def test_duplicate_yaml_keys(tmp_path: Path) -> None:
    message = error(tmp_path, HEAD + "prompts: [a]\nprompts: [b]\n")
    assert "line 5" in message and "'prompts'" in message and "twice" in message


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (
            "campaign: 'has space'\nprovider: bfl\nmodel: m\nprompts: [a]\n",
            ["`campaign`", "line 1"],
        ),
        ("campaign: '..'\nprovider: bfl\nmodel: m\nprompts: [a]\n", ["`campaign`"]),
        ("campaign: c\nprovider: bfl\nprompts: [a]\n", ["`model`", "missing"]),
        (HEAD + "version: " + "a" * 64 + "\nprompts: [a]\n", ["`version`", "both"]),
        (
            "campaign: c\nprovider: bfl\nversion: " + "a" * 64 + "\nprompts: [a]\n",
            ["line 3, field `version`", "Replicate"],
        ),
        (
            "campaign: c\nprovider: replicate\nmodel: flux-dev\nprompts: [a]\n",
            ["`model`", "owner/name"],
        ),
        ("campaign: c\nprovider: bfl\nmodel: a/b\nprompts: [a]\n", ["`model`", "flux-pro-1.1"]),
        (HEAD + "prompts: [a]\ndeadline: soon\n", ["line 5, field `deadline`", "'soon'"]),
        (HEAD + "prompts: [a]\ndeadline: -5\n", ["`deadline`", "greater than zero"]),
        (HEAD + "prompts: [a]\nvariants: 0\n", ["line 5, field `variants`"]),
        (HEAD + "prompts: [a]\nvariants: [1, 1]\n", ["`variants`", "more than once"]),
        (HEAD + "prompts: [a]\nvariants: 'two'\n", ["`variants`", "'two'"]),
        (HEAD + "prompts: [a]\ninput: [1, 2]\n", ["line 5, field `input`", "mapping"]),
        (HEAD + "prompts: [a]\ninput: {1: 2}\n", ["line 5", "`input`", "text"]),
        (HEAD + "prompts: [a]\ninput: {when: 2024-01-01}\n", ["`input.when`", "Quote"]),
        (HEAD + "prompts: [a]\ninput: {prompt: x}\n", ["`input.prompt`"]),
        (HEAD + "prompts: [a]\ninput: {w: .nan}\n", ["`input.w`", "finite"]),
        (HEAD + "prompts: a\n", ["line 4, field `prompts`", "list"]),
        (HEAD + "prompts:\n  - ok\n  - 42\n", ["line 6, field `prompts[1]`"]),
        (HEAD + "prompts:\n  - {id: x}\n", ["line 5, field `prompts[0]`", "`prompt`"]),
        (HEAD + "prompts:\n  - ''\n", ["`prompts[0]`", "empty"]),
        (HEAD + "prompts:\n  - {prompt: a, id: 'bad id'}\n", ["`prompts[0].id`"]),
        (HEAD + "prompts:\n  - {prompt: a, variants: 0}\n", ["`prompts[0].variants`"]),
        (HEAD + "prompts: [a]\nlimits: {creates_per_minute: 0}\n", ["`limits.creates_per_minute`"]),
        (HEAD + "prompts: [a]\nlimits: {max_attempts: 0}\n", ["`limits.max_attempts`"]),
        (HEAD + "prompts: [a]\nlimits: {create_burst: 0.5}\n", ["`limits.create_burst`"]),
        (HEAD + "prompts: [a]\nlimits: {max_in_flight: true}\n", ["`limits.max_in_flight`"]),
        (HEAD + "prompts: [a]\noutput: out\n", ["`output`", "mapping"]),
        (HEAD + "prompts: [a]\ndeadline: !!int abc\n", ["jobs.yaml", "tag"]),
        (HEAD + "prompts_file: ''\n", ["`prompts_file`", "empty"]),
    ],
)
def test_each_bad_value_is_reported_with_file_and_field(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    message = error(tmp_path, text)
    assert message.startswith(str(tmp_path / "jobs.yaml"))
    for fragment in fragments:
        assert fragment in message


# Broken sample files kept in the repository: (file, fragments the message must contain).
SAMPLES = [
    ("bad_yaml.yaml", ["bad_yaml.yaml, line 8", "begins on line 6", "not valid YAML"]),
    ("top_level_list.yaml", ["top_level_list.yaml", "mapping"]),
    ("typo_field.yaml", ["line 4, field `promts`", "`prompts`"]),
    ("wrong_type.yaml", ["line 6, field `limits.max_in_flight`", "'lots'"]),
    ("unknown_preset.yaml", ["line 2, field `provider`", "'black-forest'"]),
    ("escaping_prompts_file.yaml", ["line 4, field `prompts_file`", "escapes"]),
    ("bad_header.yaml", ["bad_header.csv", "line 1", "`prompt` column"]),
    ("bad_jsonl.yaml", ["bad_line.jsonl", "line 3"]),
    ("version_with_bfl.yaml", ["line 3, field `version`"]),
    ("bad_utf8.yaml", ["bad_utf8.yaml, line 5", "UTF-8"]),
    ("empty.yaml", ["empty.yaml", "empty"]),
]


@pytest.mark.parametrize(("name", "fragments"), SAMPLES, ids=[s[0] for s in SAMPLES])
def test_broken_sample_files(name: str, fragments: list[str]) -> None:
    with pytest.raises(InputError) as info:
        load_jobfile(DATA / name)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_every_sample_file_is_covered() -> None:
    assert {path.name for path in DATA.glob("*.yaml")} == {name for name, _ in SAMPLES}


# --- no other exception, whatever the input ------------------------------------------------


FIELD_NAMES = [
    "campaign",
    "provider",
    "model",
    "version",
    "input",
    "prompts",
    "prompts_file",
    "variants",
    "output",
    "deadline",
    "limits",
    "dir",
    "name",
    "prompt",
    "id",
    "seed",
    "max_in_flight",
    "creates_per_minute",
    "max_attempts",
    "preset",
    "style",
    "base_url",
    "api_key_env",
    "poll",
    "prefer_wait",
    "models",
    "vars",
    "images",
    "reuse",
    "field",
    "pattern",
    "input_image",
    "input_images",
    "mask",
]
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(["bfl", "replicate", "flux-dev", "a/b", "p.txt", "{index}", "30m", "", ".."])
    | st.sampled_from(["img.png", "photos", "input_image", "*.png", "a {animal}", "{x}{y}"])
    | st.text(max_size=20)
)
_values = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
_VALID = {"campaign": "c", "provider": "bfl", "model": "flux-dev", "prompts": ["a fox"]}


def _accepts_or_input_error(path: Path) -> None:
    try:
        result = load_jobfile(path)
    except InputError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert isinstance(result, Campaign) and result.jobs


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "p.txt").write_text("a fox\n", encoding="utf-8")
    # A real image, alone and in a folder, so that image fields and `images` can succeed too.
    png = bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
    )
    (folder / "img.png").write_bytes(png)
    (folder / "photos").mkdir()
    (folder / "photos" / "a.png").write_bytes(png)
    return folder


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.one_of(
        st.dictionaries(st.sampled_from(FIELD_NAMES), _values, max_size=8),
        # Mostly valid files with one field replaced reach the checks past the first field.
        st.builds(lambda k, v: {**_VALID, k: v}, st.sampled_from(FIELD_NAMES), _values),
        _values,
    )
)
def test_random_data_gives_a_campaign_or_input_error(fuzz_dir: Path, data: Any) -> None:
    path = fuzz_dir / "jobs.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    _accepts_or_input_error(path)


_yamlish = st.text(
    alphabet=st.sampled_from(
        list(string.ascii_letters[:8] + string.digits[:4] + ":-[]{},'\"#&*!|>\n\t %@`\x00é")
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(text=st.one_of(_yamlish, st.text(max_size=80)), raw=st.binary(max_size=40))
def test_random_text_gives_a_campaign_or_input_error(fuzz_dir: Path, text: str, raw: bytes) -> None:
    path = fuzz_dir / "jobs.yaml"
    path.write_text(text, encoding="utf-8")
    _accepts_or_input_error(path)
    path.write_bytes(raw)
    _accepts_or_input_error(path)


@settings(max_examples=200, deadline=None)
@given(suffix=st.sampled_from([".txt", ".jsonl", ".csv"]), content=st.one_of(_yamlish, st.text()))
def test_random_prompts_files_give_a_campaign_or_input_error(
    fuzz_dir: Path, suffix: str, content: str
) -> None:
    (fuzz_dir / f"fuzz{suffix}").write_text(content, encoding="utf-8")
    path = fuzz_dir / "jobs.yaml"
    path.write_text(HEAD + f"prompts_file: fuzz{suffix}\n", encoding="utf-8")
    _accepts_or_input_error(path)


# --- presets and durations, as the job file uses them --------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("90s", 90),
        ("30m", 1800),
        ("2h", 7200),
        ("1h30m", 5400),
        ("1h 30m", 5400),
        ("45", 45),
        (" 1.5h ", 5400),
        (12, 12),
        (0.5, 0.5),
    ],
)
def test_parse_duration(value: str | int | float, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "value", ["", "soon", "0", 0, -3, "5x", "30m1h", "5m5m", "h", True, float("inf"), "1h-30m"]
)
def test_parse_duration_refuses(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


@pytest.mark.parametrize(
    ("seconds", "text"), [(5400, "1h30m"), (300, "5m"), (30, "30s"), (3661, "1h1m1s"), (0.2, "1s")]
)
def test_format_duration_round_trips(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == max(1, round(seconds))


def test_presets_match_the_providers() -> None:
    assert set(PRESETS) == {"replicate", "bfl", "deerapi-replicate", "deerapi-flux", "cometapi"}
    deer = PRESETS["deerapi-flux"]
    assert (deer.style, deer.base_url, deer.auth, deer.poll) == (
        "bfl",
        "https://api.deerapi.com/flux",
        "bearer",
        "get_result",
    )
    assert PRESETS["bfl"].auth == "x-key" and PRESETS["replicate"].prefer_wait == 5
    assert PRESETS["cometapi"].prefer_wait is None
    assert default_limits(PRESETS["replicate"]).max_in_flight == 100
    assert default_limits(PRESETS["bfl"]).max_in_flight == 24
    assert default_limits(PRESETS["cometapi"]).creates_per_minute == 120


def test_provider_mapping_overrides_a_preset() -> None:
    provider = resolve_provider({"preset": "replicate", "prefer_wait": None}, "here")
    assert provider.name == "replicate" and provider.prefer_wait is None
    custom = resolve_provider(
        {"style": "bfl", "base_url": "http://localhost:9000/", "api_key_env": "K"}, "here"
    )
    assert (custom.name, custom.auth, custom.poll, custom.base_url) == (
        "custom",
        "x-key",
        "polling_url",
        "http://localhost:9000",
    )


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ({"style": "bfl"}, "`base_url`"),
        ({"preset": "bfl", "prefer_wait": 5}, "replicate style"),
        ({"preset": "replicate", "poll": "get_result"}, "bfl style"),
        ({"preset": "replicate", "prefer_wait": 61}, "1 to 60"),
        ({"preset": "bfl", "api_key_env": "bfl-key"}, "BFL_API_KEY"),
        ({"preset": "bfl", "base_url": "https://user:pw@x.com"}, "credentials"),
        ({"preset": "bfl", "auth": "basic"}, "bearer, x-key"),
        ({"preset": "bfl", "style": "replicate"}, "`base_url`"),
        ({"preset": "bfl", "colour": "red"}, "'colour'"),
        (42, "preset name"),
    ],
)
def test_bad_provider_values(value: Any, fragment: str) -> None:
    with pytest.raises(InputError) as info:
        resolve_provider(value, "jobs.yaml, line 2, field `provider`")
    assert str(info.value).startswith("jobs.yaml, line 2, field `provider`")
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("preset", "url"),
    [
        ("replicate", "http://127.0.0.1:8000"),
        ("bfl", "http://127.0.0.1:8000"),
        ("deerapi-flux", "http://127.0.0.1:8000/flux"),
        ("deerapi-replicate", "http://127.0.0.1:8000/replicate"),
    ],
)
def test_simulated_keeps_the_path_prefix(preset: str, url: str) -> None:
    provider = simulated(PRESETS[preset], "http://127.0.0.1:8000/")
    assert provider.base_url == url
    assert provider.auth == PRESETS[preset].auth


def test_simulated_replaces_an_unknown_prefix_by_style() -> None:
    custom = resolve_provider(
        {"style": "bfl", "base_url": "https://proxy.example.com/v2/bfl", "api_key_env": "K"}, "x"
    )
    assert simulated(custom, "http://sim").base_url == "http://sim/flux"


def test_priority_defaults_and_bounds(tmp_path: Path) -> None:
    assert load_jobfile(write(tmp_path, HEAD + "prompts: [a]\n")).settings.priority == 10
    assert (
        load_jobfile(write(tmp_path, HEAD + "prompts: [a]\npriority: 40\n")).settings.priority == 40
    )
    message = error(tmp_path, HEAD + "prompts: [a]\npriority: 0\n")
    assert "`priority`" in message and "line 5" in message
