"""Prompts: prompts files (.txt, .jsonl, .csv), prompt entries, and prompt templates (`vars`).

Most tests go through `load_jobfile`, since what matters is the jobs a file turns into; the
template functions are also called directly.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from runner.errors import InputError
from runner.jobfile import MAX_JOBS
from runner.prompts import Place, expand_template, parse_entry, placeholders, template_size
from tests.unit.test_jobfile import HEAD, error, load, prompts_of, write

# --- prompts files ---------------------------------------------------------------------------


def test_txt_prompts_file_skips_blanks_and_comments_and_records_lines(tmp_path: Path) -> None:
    campaign = load(
        tmp_path,
        HEAD + "prompts_file: p.txt\n",
        p_txt="# header\n\na fox in snow\n   \n  # indented comment\n  a red lantern  \n",
    )
    assert prompts_of(campaign) == ["a fox in snow", "a red lantern"]
    assert [job.meta["source"] for job in campaign.jobs] == ["p.txt:3", "p.txt:6"]


def test_txt_accepts_crlf_and_a_byte_order_mark(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_bytes("\ufeffa fox\r\nsecond\r\n".encode())
    campaign = load(tmp_path, HEAD + "prompts_file: p.txt\n")
    assert prompts_of(campaign) == ["a fox", "second"]


def test_jsonl_prompts_file_takes_objects_and_strings(tmp_path: Path) -> None:
    jsonl = "\n".join(
        [
            '{"prompt": "a fox", "id": "fox", "seed": 3, "width": 640}',
            "",
            '"just a string"',
            '{"prompt": "two of these", "variants": 2, "style": {"tone": "warm"}}',
        ]
    )
    campaign = load(tmp_path, HEAD + "input: {width: 1024}\nprompts_file: p.jsonl\n", p_jsonl=jsonl)
    jobs = campaign.jobs
    assert [job.input["prompt"] for job in jobs] == [
        "a fox",
        "just a string",
        "two of these",
        "two of these",
    ]
    assert jobs[0].key == "fox"
    assert jobs[0].input == {"prompt": "a fox", "seed": 3, "width": 640}
    assert jobs[1].input == {"prompt": "just a string", "width": 1024}
    assert jobs[2].input["style"] == {"tone": "warm"}
    assert [job.meta["source"] for job in jobs] == [
        "p.jsonl:1",
        "p.jsonl:3",
        "p.jsonl:4",
        "p.jsonl:4",
    ]


def test_csv_prompts_file_columns_become_overrides(tmp_path: Path) -> None:
    csv_text = (
        "prompt,id,variants,seed,style,raw\n"
        'a fox,fox,,7,"warm, soft",true\n'
        "a lantern,,2,,007,\n"
        ",,,,,\n"
        '"a boat\non two lines",boat,,1.5,null,\n'
        'last,,"[10, 20]",,,\n'
    )
    campaign = load(tmp_path, HEAD + "input: {seed: 100}\nprompts_file: p.csv\n", p_csv=csv_text)
    jobs = {job.key: job for job in campaign.jobs}
    assert jobs["fox"].input == {"prompt": "a fox", "seed": 7, "style": "warm, soft", "raw": True}
    lanterns = [job for job in campaign.jobs if job.input["prompt"] == "a lantern"]
    # An empty cell keeps the default; "007" is not a JSON number, so it stays text.
    assert [job.input["seed"] for job in lanterns] == [100, 101]
    assert lanterns[0].input["style"] == "007"
    assert jobs["boat"].input == {"prompt": "a boat\non two lines", "seed": 1.5, "style": None}
    assert jobs["boat"].meta["source"] == "p.csv:5"
    last = [job for job in campaign.jobs if job.input["prompt"] == "last"]
    assert [job.input["seed"] for job in last] == [10, 20]
    assert last[0].meta["source"] == "p.csv:7"


def test_inline_prompts_come_before_the_file(tmp_path: Path) -> None:
    campaign = load(
        tmp_path, HEAD + "prompts: [first, second]\nprompts_file: p.txt\n", p_txt="third\n"
    )
    assert prompts_of(campaign) == ["first", "second", "third"]
    assert [job.index for job in campaign.jobs] == [1, 2, 3]
    assert campaign.jobs[0].meta["source"] == "jobs.yaml:4"


def test_prompts_file_in_a_subfolder_is_allowed(tmp_path: Path) -> None:
    write(tmp_path, "deep prompt\n", "sub/dir/p.txt")
    campaign = load(tmp_path, HEAD + "prompts_file: sub/dir/p.txt\n")
    assert prompts_of(campaign) == ["deep prompt"]
    assert campaign.jobs[0].meta["source"] == "sub/dir/p.txt:1"


# --- prompts file errors ---------------------------------------------------------------------


def test_missing_prompts_file(tmp_path: Path) -> None:
    message = error(tmp_path, HEAD + "prompts_file: nope.txt\n")
    assert "line 4, field `prompts_file`" in message and "nope.txt" in message
    assert "does not exist" in message


def test_prompts_file_that_is_a_folder(tmp_path: Path) -> None:
    (tmp_path / "p.txt").mkdir()
    message = error(tmp_path, HEAD + "prompts_file: p.txt\n")
    assert "`prompts_file`" in message and "folder" in message


@pytest.mark.parametrize("target", ["../outside.txt", "ABSOLUTE", "link.txt"])
def test_prompts_file_escaping_the_folder_is_refused(tmp_path: Path, target: str) -> None:
    outside = write(tmp_path, "secret\n", "outside.txt")
    folder = tmp_path / "job"
    folder.mkdir()
    (folder / "link.txt").symlink_to(outside)
    value = str(outside) if target == "ABSOLUTE" else target
    message = error(folder, HEAD + f"prompts_file: '{value}'\n")
    assert "line 4, field `prompts_file`" in message and "escapes the folder" in message


def test_unknown_prompts_file_extension(tmp_path: Path) -> None:
    message = error(tmp_path, HEAD + "prompts_file: p.md\n", p_md="a\n")
    assert "`prompts_file`" in message and "'.md'" in message and ".jsonl" in message


def test_bad_utf8_in_the_prompts_file(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_bytes(b"fine\nalso fine\ncaf\xe9\n")
    message = error(tmp_path, HEAD + "prompts_file: p.txt\n")
    assert "p.txt (prompts_file of" in message and "line 3" in message and "UTF-8" in message


def test_csv_without_prompt_column(tmp_path: Path) -> None:
    message = error(tmp_path, HEAD + "prompts_file: p.csv\n", p_csv="text,id\na fox,fox\n")
    assert "p.csv" in message and "line 1" in message and "`prompt` column" in message


def test_csv_row_with_too_many_cells(tmp_path: Path) -> None:
    message = error(tmp_path, HEAD + "prompts_file: p.csv\n", p_csv="prompt,id\nok,a\nx,b,extra\n")
    assert "p.csv" in message and "line 3" in message


def test_bad_jsonl_line(tmp_path: Path) -> None:
    jsonl = '{"prompt": "a"}\n\n{"prompt": "b", seed: 3}\n'
    message = error(tmp_path, HEAD + "prompts_file: p.jsonl\n", p_jsonl=jsonl)
    assert "p.jsonl" in message and "line 3" in message and "JSON" in message


@pytest.mark.parametrize(
    "line", ["42", '{"id": "x"}', '{"prompt": ""}', '{"prompt": "a", "seed": NaN}']
)
def test_jsonl_lines_that_are_not_prompts(tmp_path: Path, line: str) -> None:
    message = error(tmp_path, HEAD + "prompts_file: p.jsonl\n", p_jsonl=f'"fine"\n{line}\n')
    assert "p.jsonl" in message and "line 2" in message


def test_jsonl_and_csv_entries_take_their_own_vars(tmp_path: Path) -> None:
    jsonl = '{"prompt": "a {animal}", "vars": {"animal": ["owl", "bat"]}}\n'
    campaign = load(tmp_path, HEAD + "prompts_file: p.jsonl\n", p_jsonl=jsonl)
    assert prompts_of(campaign) == ["a owl", "a bat"]
    csv_text = 'prompt,vars,seed\n"a {animal}","{""animal"": [""owl"", ""bat""]}",4\n'
    campaign = load(tmp_path, HEAD + "prompts_file: p.csv\n", p_csv=csv_text)
    assert prompts_of(campaign) == ["a owl", "a bat"]
    assert [job.input["seed"] for job in campaign.jobs] == [4, 4]
    # `vars` configures the template: it is never sent to the provider.
    assert all("vars" not in job.input for job in campaign.jobs)


# --- templates -------------------------------------------------------------------------------


def test_a_template_expands_to_every_combination_in_placeholder_order(tmp_path: Path) -> None:
    text = HEAD + textwrap.dedent("""\
        vars:
          animal: [cat, dog, owl]
          style: [ink, oil]
        prompts:
          - a {style} drawing of a {animal}, {style} again
        """)
    campaign = load(tmp_path, text)
    # {style} appears first in the prompt, so it varies slowest; values keep their list order.
    assert prompts_of(campaign) == [
        "a ink drawing of a cat, ink again",
        "a ink drawing of a dog, ink again",
        "a ink drawing of a owl, ink again",
        "a oil drawing of a cat, oil again",
        "a oil drawing of a dog, oil again",
        "a oil drawing of a owl, oil again",
    ]
    assert [job.meta["vars"] for job in campaign.jobs][:2] == [
        {"style": "ink", "animal": "cat"},
        {"style": "ink", "animal": "dog"},
    ]
    assert campaign.jobs[0].meta["slug"] == "a-ink-drawing-of-a-cat-ink-again"
    assert campaign.jobs[0].meta["prompt"] == "a ink drawing of a cat, ink again"
    assert len({job.key for job in campaign.jobs}) == 6
    assert [job.index for job in campaign.jobs] == list(range(1, 7))


def test_meta_vars_holds_only_the_names_used_and_scalars_count_as_one(tmp_path: Path) -> None:
    text = HEAD + "vars: {animal: [cat, dog], light: dusk, unused: [a, b, c]}\n"
    campaign = load(tmp_path, text + "prompts: ['a {animal} at {light}', plain]\n")
    assert prompts_of(campaign) == ["a cat at dusk", "a dog at dusk", "plain"]
    assert campaign.jobs[0].meta["vars"] == {"animal": "cat", "light": "dusk"}
    # A prompt without placeholders is one job, and its meta has no vars.
    assert "vars" not in campaign.jobs[2].meta


def test_numbers_fill_placeholders_and_stay_numbers_in_meta(tmp_path: Path) -> None:
    campaign = load(tmp_path, HEAD + "vars: {n: [2, 3.5]}\nprompts: ['{n} foxes']\n")
    assert prompts_of(campaign) == ["2 foxes", "3.5 foxes"]
    assert [job.meta["vars"]["n"] for job in campaign.jobs] == [2, 3.5]


def test_double_braces_are_literal(tmp_path: Path) -> None:
    text = (
        HEAD + "vars: {animal: [cat]}\nprompts: ['{{animal}} is {animal}, {{{animal}}}', '{{x}}']\n"
    )
    campaign = load(tmp_path, text)
    assert prompts_of(campaign) == ["{animal} is cat, {cat}", "{x}"]


def test_without_vars_braces_are_plain_text_and_keys_do_not_move(tmp_path: Path) -> None:
    before = load(tmp_path, HEAD + "prompts: ['a sign reading {SALE}', 'a {{b}}']\n")
    assert prompts_of(before) == ["a sign reading {SALE}", "a {{b}}"]
    assert "vars" not in before.jobs[0].meta
    # Adding vars that only a new prompt uses leaves the earlier keys in place.
    after = load(
        tmp_path,
        HEAD + "prompts: ['a sign reading {SALE}', 'a {{b}}', {prompt: '{x}', vars: {x: [1]}}]\n",
    )
    assert [job.key for job in after.jobs][:2] == [job.key for job in before.jobs]


def test_per_prompt_vars_override_the_top_level_ones(tmp_path: Path) -> None:
    text = HEAD + textwrap.dedent("""\
        vars: {animal: [cat, dog], style: ink}
        prompts:
          - a {animal} in {style}
          - prompt: a {animal} in {style}
            vars: {animal: [heron]}
        """)
    campaign = load(tmp_path, text)
    assert prompts_of(campaign) == ["a cat in ink", "a dog in ink", "a heron in ink"]


def test_a_placeholder_without_values_is_named_with_its_line(tmp_path: Path) -> None:
    text = HEAD + "vars: {animal: [cat]}\nprompts:\n  - fine {animal}\n  - a {animal} {colour}\n"
    message = error(tmp_path, text)
    assert "line 7" in message and "`prompts[1]`" in message and "{colour}" in message
    assert "{{colour}}" in message  # tells how to write literal braces instead


def test_an_empty_list_of_values_is_an_error_only_when_used(tmp_path: Path) -> None:
    campaign = load(tmp_path, HEAD + "vars: {animal: [cat], none: []}\nprompts: ['a {animal}']\n")
    assert prompts_of(campaign) == ["a cat"]
    message = error(tmp_path, HEAD + "vars: {none: []}\nprompts: ['a {none}']\n")
    assert "'none'" in message and "empty list" in message


@pytest.mark.parametrize(
    ("vars_text", "fragments"),
    [
        ("[cat, dog]", ["line 4, field `vars`", "mapping"]),
        ("{animal: [[cat]]}", ["`vars.animal`", "a list"]),
        ("{animal: [true]}", ["`vars.animal`", "true/false"]),
        ("{animal: {a: 1}}", ["`vars.animal`", "a mapping"]),
        ("{animal: [cat, cat]}", ["`vars.animal`", "more than once"]),
        ("{'two words': [x]}", ["`vars`", "'two words'"]),
        ("{9lives: [x]}", ["`vars`", "'9lives'"]),
    ],
)
def test_bad_vars(tmp_path: Path, vars_text: str, fragments: list[str]) -> None:
    message = error(tmp_path, HEAD + f"vars: {vars_text}\nprompts: [a]\n")
    for fragment in fragments:
        assert fragment in message


def test_a_template_that_fills_to_nothing_is_refused(tmp_path: Path) -> None:
    message = error(tmp_path, HEAD + "vars: {x: ['', a]}\nprompts: ['{x}']\n")
    assert "`prompts[0]`" in message and "empty" in message


def test_template_keys_with_an_id_survive_adding_values(tmp_path: Path) -> None:
    text = (
        HEAD + "vars: {animal: ANIMALS}\nprompts: [{prompt: 'a {animal}', id: zoo, variants: 2}]\n"
    )
    before = load(tmp_path, text.replace("ANIMALS", "[cat, dog]"))
    after = load(tmp_path, text.replace("ANIMALS", "[emu, cat, dog]"))
    keys = [job.key for job in before.jobs]
    assert len(set(keys)) == 4 and all(key.startswith("zoo~") for key in keys)
    assert keys[1] == keys[0] + ".v1"
    assert set(keys) < {job.key for job in after.jobs}
    # The hash keys of prompts without ids follow the filled-in prompt, like any prompt.
    plain = load(tmp_path, HEAD + "vars: {animal: [cat]}\nprompts: ['a {animal}']\n")
    literal = load(tmp_path, HEAD + "prompts: ['a cat']\n")
    assert plain.jobs[0].key == literal.jobs[0].key


def test_repeated_combinations_are_duplicates(tmp_path: Path) -> None:
    # "a" + "bc" and "ab" + "c" give the same prompt: one job, one duplicate.
    campaign = load(tmp_path, HEAD + "vars: {x: [a, ab], y: [bc, c]}\nprompts: ['{x}{y}']\n")
    assert prompts_of(campaign) == ["abc", "ac", "abbc"]
    assert campaign.duplicates == 1


def test_expansion_is_capped_with_the_count(tmp_path: Path) -> None:
    values = ", ".join(f"v{i}" for i in range(400))
    text = HEAD + f"vars: {{a: [{values}], b: [{values}]}}\nprompts: [x, '{{a}} {{b}}']\n"
    message = error(tmp_path, text)
    assert "160,001 jobs" in message and "100,000" in message
    assert "160,000" in message and "`prompts[1]`" in message  # the prompt that makes most


def test_the_cap_counts_variants_and_models(tmp_path: Path) -> None:
    values = ", ".join(str(i) for i in range(101))
    text = (
        "campaign: c\nprovider: bfl\nmodels: [flux-dev, flux-pro-1.1]\nvariants: 500\n"
        f"vars: {{n: [{values}]}}\nprompts: ['{{n}}']\n"
    )
    message = error(tmp_path, text)
    assert "100,000" in message and "101,000 jobs" in message
    assert MAX_JOBS == 100_000


def test_a_prompts_file_can_use_top_level_vars(tmp_path: Path) -> None:
    write(tmp_path, "a {animal}\nno placeholder\n", "p.txt")
    campaign = load(tmp_path, HEAD + "vars: {animal: [cat, dog]}\nprompts_file: p.txt\n")
    assert prompts_of(campaign) == ["a cat", "a dog", "no placeholder"]
    assert [job.meta["source"] for job in campaign.jobs] == ["p.txt:1", "p.txt:1", "p.txt:2"]


# --- the functions themselves ------------------------------------------------------------------


def test_placeholders_in_order_of_first_appearance() -> None:
    assert placeholders("{b} {a} {b} {{c}} {not a name} {_x1}") == ["b", "a", "_x1"]
    assert placeholders("no braces") == []


def test_expand_template_without_vars_returns_the_text_unchanged() -> None:
    place = Place("f")
    assert expand_template("{a} {{b}}", None, None, place) == [("{a} {{b}}", {})]
    assert template_size("{a}", None, None, place) == 1
    assert template_size("{a}{b}", {"a": ["1", "2"]}, {"b": ["x", "y", "z"]}, place) == 6
    with pytest.raises(InputError, match=r"^f: .*\{a\}"):
        expand_template("{a}", {}, None, place)


def test_parse_entry_keeps_vars_out_of_the_overrides() -> None:
    entry = parse_entry(
        {"prompt": "a {x}", "vars": {"x": "y"}, "seed": 3}, Place("f", 2), "jobs.yaml"
    )
    assert entry.vars == {"x": ["y"]}
    assert entry.overrides == {"seed": 3}
    assert entry.source == "jobs.yaml:2"
    # null means no vars, as a missing field does.
    assert parse_entry({"prompt": "a", "vars": None}, Place("f"), "j").vars is None
