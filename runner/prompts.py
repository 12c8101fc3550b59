"""Prompts as the user writes them: prompt entries, prompts files and prompt templates.

Responsible for: reading a prompts file (.txt, .jsonl, .csv) into entries that remember their
file and line, checking each entry's own fields (prompt, id, variants, vars, input overrides),
and expanding a prompt template over its `vars`. It also holds `Place`, the "file, line, field"
prefix every loader message starts with, and the small helpers those messages share.

It reads only the prompts file it is given, raises nothing but `InputError` for bad input, and
must not import `runner.jobfile`, which builds on it.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import re
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from runner.errors import InputError
from runner.inputs import MARKER_KEY

__all__ = [
    "MAX_PROMPTS_FILE_BYTES",
    "MAX_PROMPT_CHARS",
    "MAX_VARIANTS",
    "NAME_RE",
    "PROMPTS_FILE_EXPECTED",
    "PROMPTS_FILE_TYPES",
    "SURROGATE",
    "VARIANTS_EXPECTED",
    "VARS_EXPECTED",
    "Entry",
    "Place",
    "Variants",
    "Vars",
    "check_json",
    "check_prompt",
    "dotted",
    "expand_template",
    "kind",
    "parse_entry",
    "parse_variants",
    "parse_vars",
    "placeholders",
    "read_prompts_file",
    "read_text",
    "show",
    "template_size",
]

PROMPTS_FILE_TYPES = (".txt", ".jsonl", ".csv")
MAX_VARIANTS = 1000  # per prompt; more is almost surely a typo, and each one is billed
# The longest prompt image APIs take is about 32,000 characters (OpenAI's gpt-image-1); a longer
# one is a file that lost its line breaks, and would be stored, hashed and sent with every job.
MAX_PROMPT_CHARS = 32_000
MAX_PROMPTS_FILE_BYTES = 256 * 1024 * 1024  # 100,000 prompts of 2,500 characters, with room
NAME_RE = r"^[A-Za-z0-9._-]{1,64}$"
NAME_CHARS = "1 to 64 characters from A-Z a-z 0-9 . _ -"
VARIANTS_EXPECTED = (
    f"a number of images per prompt from 1 to {MAX_VARIANTS}, or a list of seeds such as "
    "[11, 22, 33]"
)
PROMPTS_FILE_EXPECTED = "a path to a .txt, .jsonl or .csv file, relative to the job file"
VARS_EXPECTED = "a mapping from names to a value or a list of values, such as {animal: [cat, dog]}"
RESERVED_KEYS = ("prompt", "id", "variants", "vars")
_MAX_DEPTH = 64  # nesting of input values; deeper is a recursive YAML alias or a mistake
# `{{` and `}}` come first in the alternation so that an escaped brace never starts a name.
_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Control characters other than tab and line breaks: in a prompt they come from binary data.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Half of a UTF-16 pair: a JSON or YAML "\ud800" escape alone. Python keeps it in a str, but it
# cannot be encoded, so storing or hashing it would fail far from the file that had it.
SURROGATE = re.compile(r"[\ud800-\udfff]")

Path_ = tuple[str | int, ...]
Variants = int | list[int]
VarValue = str | int | float
Vars = dict[str, list[VarValue]]


@dataclass(frozen=True)
class Place:
    """Where a value came from, for messages: file (as the user wrote it), line, field."""

    file: str
    line: int | None = None
    field: str = ""
    context: str = ""  # e.g. " (prompts_file of jobs.yaml)"

    def at(self, sub: str) -> Place:
        # "[2]" joins without a dot, so that list items read as they do in Python: `a.b[2]`.
        joined = sub if not self.field else self.field + (sub if sub[:1] == "[" else f".{sub}")
        return replace(self, field=joined)

    def where(self) -> str:
        text = self.file + self.context
        if self.line is not None:
            text += f", line {self.line}"
        if self.field:
            text += f", field `{self.field}`"
        return text

    def error(self, problem: str, todo: str = "") -> InputError:
        text = f"{self.where()}: {problem}" + (f" {todo}" if todo else "")
        # One paragraph, whatever a library's message held.
        return InputError(re.sub(r"\s*\n\s*", " ", text))


@dataclass
class Entry:
    """One prompt as written, before expansion into templates, images, models and variants."""

    prompt: str
    id: str | None
    variants: Variants | None
    overrides: dict[str, Any]
    source: str  # "file:line", kept in the job's meta
    place: Place
    vars: Vars | None = None  # the entry's own `vars`; None when it has none


# --- values ------------------------------------------------------------------------------------


def read_text(
    path: Path,
    place: Place,
    what: str,
    content: Place | None = None,
    max_bytes: int = MAX_PROMPTS_FILE_BYTES,
    todo_big: str = "Split it in parts, with a job file for each.",
) -> str:
    """The file's text; errors opening it are reported at `place`, errors in it at `content`.

    Only a regular file of at most `max_bytes` is read: a pipe or device would block or never
    end, and a huge file would fill memory before anything else could refuse it.
    """
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise place.error(f"{what} is a folder, not a file.", "Give the file's path.")
        if not stat.S_ISREG(info.st_mode):
            raise place.error(
                f"{what} is not a regular file (a pipe, socket or device).",
                "Save the content to a file and give that file's path.",
            )
        size = info.st_size
        if size <= max_bytes:
            with path.open("rb") as handle:
                raw = handle.read(max_bytes + 1)  # no more, should it grow meanwhile
            size = len(raw)
        if size > max_bytes:
            raise place.error(
                f"{what} is {_mib(size)}, more than the {_mib(max_bytes)} it may be.", todo_big
            )
    except FileNotFoundError:
        raise place.error(f"{what} does not exist.", "Check the path and run again.") from None
    except IsADirectoryError:
        raise place.error(f"{what} is a folder, not a file.", "Give the file's path.") from None
    except PermissionError:
        raise place.error(
            f"{what} cannot be read (permission denied).", "Make it readable and run again."
        ) from None
    except (OSError, ValueError) as exc:
        raise place.error(f"{what} cannot be read: {exc}.", "Check the path.") from None
    try:
        # utf-8-sig: editors on Windows like to start UTF-8 files with a byte order mark.
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        utf16 = (
            " (it is UTF-16, by its first bytes)" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        )
        raise replace(content or place, line=line).error(
            f"{what} is not valid UTF-8 text{utf16} (byte 0x{raw[exc.start]:02x} cannot be "
            "decoded).",
            "Save the file as UTF-8 and run again.",
        ) from None


def _mib(size: int) -> str:
    return f"{size / 1024 / 1024:,.1f} MiB"


def check_json(value: Any, place: Place, depth: int = 0) -> None:
    """Raise unless `value` is something JSON carries: text keys, finite numbers, no markers."""
    if depth > _MAX_DEPTH:
        top = re.split(r"[.\[]", place.field, maxsplit=1)[0]
        raise replace(place, field=top).error(
            f"the value is nested more than {_MAX_DEPTH} levels deep (or refers to itself "
            "through a YAML alias).",
            "Simplify it.",
        )
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise place.error(
                    f"the key {show(key)} is {kind(key)}; input field names must be text.",
                    "Quote the key.",
                )
            if key == MARKER_KEY:
                # A user-written marker would make the worker read and upload any file it names.
                raise place.at(key).error(
                    f"the key {MARKER_KEY!r} is reserved for image files the runner reads itself.",
                    "Give the image's path or URL as the field's value instead.",
                )
            check_json(item, place.at(key), depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_json(item, place.at(f"[{i}]"), depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise place.error(f"found {value}, which JSON cannot carry.", "Use a finite number.")
    elif value is not None and not isinstance(value, str | int | float | bool):
        raise place.error(
            f"found {show(value)} ({kind(value)}), which cannot be sent to a provider.",
            "Quote it to send it as text.",
        )


def check_prompt(text: str, place: Place) -> None:
    """Raise unless `text` is a prompt a provider can take: not too long, no binary garbage."""
    if len(text) > MAX_PROMPT_CHARS:
        raise place.error(
            f"the prompt is {len(text):,} characters long, more than the {MAX_PROMPT_CHARS:,} "
            "a prompt may have.",
            "Shorten it; in a .txt prompts file every line is one prompt.",
        )
    control = _CONTROL.search(text)
    if control is not None:
        raise place.error(
            f"the prompt contains the control character U+{ord(control.group()):04X}, which "
            "usually comes from binary data.",
            "Remove it.",
        )


def parse_variants(value: Any, place: Place) -> Variants:
    if isinstance(value, int) and not isinstance(value, bool):
        if not 1 <= value <= MAX_VARIANTS:
            raise place.error(f"found {value}, expected {VARIANTS_EXPECTED}.", "Fix the number.")
        return value
    if isinstance(value, list):
        if not value or len(value) > MAX_VARIANTS:
            raise place.error(
                f"found a list of {len(value)} seeds, expected {VARIANTS_EXPECTED}.",
                "Fix the list and run again.",
            )
        for seed in value:
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise place.error(
                    f"the seed {show(seed)} is not a whole number; expected {VARIANTS_EXPECTED}.",
                    "Make every seed a whole number.",
                )
        repeated = sorted({s for s in value if value.count(s) > 1})
        if repeated:
            raise place.error(
                f"the seed {repeated[0]} is listed more than once, which would make the same "
                "image twice.",
                "Remove the repeat.",
            )
        return list(value)
    raise place.error(
        f"found {show(value)} ({kind(value)}), expected {VARIANTS_EXPECTED}.",
        "Fix the value and run again.",
    )


def parse_vars(value: Any, place: Place) -> Vars:
    """Template variables: each name's values as a list (a lone value is a list of one)."""
    if not isinstance(value, dict):
        raise place.error(
            f"found {show(value)} ({kind(value)}), expected {VARS_EXPECTED}.",
            "Fix the value and run again.",
        )
    result: Vars = {}
    for name, given in value.items():
        if not isinstance(name, str) or not _VAR_NAME.fullmatch(name):
            raise place.error(
                f"the name {show(name)} cannot be a placeholder: names are letters, digits and "
                "_, not starting with a digit.",
                "Rename it, and write it in prompts as {name}.",
            )
        values = given if isinstance(given, list) else [given]
        for item in values:
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                raise place.at(name).error(
                    f"found {show(item)} ({kind(item)}); a value is text or a number.",
                    "Quote it to use it as text.",
                )
            if isinstance(item, float) and not math.isfinite(item):
                raise place.at(name).error(f"found {item}.", "Use a finite number or text.")
        if len({json.dumps(item) for item in values}) < len(values):
            raise place.at(name).error(
                "a value is listed more than once, which would make the same jobs twice.",
                "Remove the repeat.",
            )
        result[name] = list(values)
    return result


# --- entries -----------------------------------------------------------------------------------


def parse_entry(raw: Any, place: Place, source_file: str) -> Entry:
    """One prompt: a string, or a mapping with `prompt` and optional id, variants, vars, input."""
    source = f"{source_file}:{place.line}" if place.line is not None else source_file
    if isinstance(raw, str):
        if not raw.strip():
            raise place.error("the prompt is empty.", "Write a prompt or remove the entry.")
        check_prompt(raw, place)
        return Entry(raw, None, None, {}, source, place)
    if not isinstance(raw, dict):
        raise place.error(
            f"found {show(raw)} ({kind(raw)}), expected a prompt: a string, or a mapping with "
            "`prompt` and optional `id`, `variants`, `vars` and input overrides.",
            "Quote the prompt if it is meant as text.",
        )
    prompt = raw.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        problem = (
            "the prompt mapping has no `prompt`."
            if prompt is None
            else f"`prompt` is {show(prompt)} ({kind(prompt)}), expected non-empty text."
        )
        raise place.error(problem, "Give every prompt mapping a `prompt: ...` text.")
    check_prompt(prompt, place.at("prompt"))
    user_id = _entry_id(raw.get("id"), place)
    # A null `variants` means the default, as a missing one does.
    variants = raw.get("variants")
    if variants is not None:
        variants = parse_variants(variants, place.at("variants"))
    given_vars = raw.get("vars")
    own_vars = None if given_vars is None else parse_vars(given_vars, place.at("vars"))
    overrides = {k: v for k, v in raw.items() if k not in RESERVED_KEYS}
    check_json(overrides, place, 0)
    return Entry(prompt, user_id, variants, overrides, source, place, own_vars)


def _entry_id(value: Any, place: Place) -> str | None:
    if value is None:
        return None
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not re.fullmatch(NAME_RE, text):
        raise place.at("id").error(
            f"found {show(value)}, expected an id of {NAME_CHARS}.", "Change the id."
        )
    return text


def read_prompts_file(value: str, place: Place, base_dir: Path, job_file: str) -> list[Entry]:
    """The entries of the prompts file `value` (relative to `base_dir`), named at `place`."""
    if not value.strip():
        raise place.error("the path is empty.", f"Set it to {PROMPTS_FILE_EXPECTED}.")
    try:
        root = base_dir.resolve()
        target = (base_dir / value).resolve()
    except (OSError, ValueError, RuntimeError) as exc:
        raise place.error(
            f"the path {value!r} cannot be used: {exc}.", "Check the path and run again."
        ) from None
    if not target.is_relative_to(root):
        # The job file may come from someone else; it must not make us read files elsewhere.
        raise place.error(
            f"the prompts file path {value!r} escapes the folder of the job file ({root}).",
            "Move the prompts file into that folder (or a subfolder) and give a relative path.",
        )
    suffix = target.suffix.lower()
    if suffix not in PROMPTS_FILE_TYPES:
        raise place.error(
            f"the prompts file {value!r} has the extension {suffix or '(none)'!r}; expected one "
            f"of {', '.join(PROMPTS_FILE_TYPES)}.",
            "Rename it: .txt for one prompt a line, .jsonl for JSON objects, .csv for a table.",
        )
    file_place = Place(value, context=f" (prompts_file of {job_file})")
    text = read_text(target, place, f"the prompts file {str(target)!r}", file_place)
    rel = target.relative_to(root).as_posix()
    if suffix == ".txt":
        return _from_txt(text, file_place, rel)
    if suffix == ".jsonl":
        return _from_jsonl(text, file_place, rel)
    return _from_csv(text, file_place, rel)


def _lines(text: str) -> list[str]:
    # Not str.splitlines: it also splits at U+2028 and friends, which editors do not count. A
    # lone CR they do count (old Mac files): unsplit, a whole file would become one prompt.
    return re.split(r"\r\n|\r|\n", text)


def _from_txt(text: str, file_place: Place, rel: str) -> list[Entry]:
    entries = []
    file, field, context = file_place.file, file_place.field, file_place.context
    for number, line in enumerate(_lines(text), start=1):
        prompt = line.strip()
        if prompt and not prompt.startswith("#"):
            # Place(...) rather than replace(file_place, ...), which costs several times more
            # and is paid once a line: a prompts file may have 100,000 of them.
            place = Place(file, number, field, context)
            check_prompt(prompt, place)
            entries.append(Entry(prompt, None, None, {}, f"{rel}:{number}", place))
    return entries


def _from_jsonl(text: str, file_place: Place, rel: str) -> list[Entry]:
    entries = []
    for number, line in enumerate(_lines(text), start=1):
        if not line.strip():
            continue
        place = replace(file_place, line=number)
        try:
            raw = json.loads(line, parse_constant=_no_constant, object_pairs_hook=_unique_pairs)
        except (ValueError, RecursionError) as exc:
            raise place.error(
                f"this line is not valid JSON: {exc}.",
                'Write one JSON object a line, such as {"prompt": "a fox", "id": "fox"}.',
            ) from None
        if not isinstance(raw, dict | str):
            raise place.error(
                f"found {kind(raw)}, expected a JSON object with `prompt` or a JSON string.",
                'Write it like {"prompt": "a fox"}.',
            )
        _check_surrogates(raw, place)
        entries.append(parse_entry(raw, place, rel))
    return entries


def _check_surrogates(raw: Any, place: Place) -> None:
    """Raise if any text in `raw` (parsed JSON: no cycles), keys included, is half a character."""
    stack = [raw]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and SURROGATE.search(item):
            raise place.error(
                f"the text {show(item)} holds a \\u escape for half a character (an unpaired "
                "UTF-16 surrogate), which cannot be stored.",
                "Write the character itself, or escape both halves of the pair.",
            )


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"the key {key!r} appears twice")
        result[key] = value
    return result


def _from_csv(text: str, file_place: Place, rel: str) -> list[Entry]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise replace(file_place, line=1).error(
            f"the header row cannot be read: {exc}.", "Check the quoting of the first row."
        ) from None
    if header is None:
        return []
    header = [name.strip() for name in header]
    header_place = replace(file_place, line=1)
    if "prompt" not in header:
        raise header_place.error(
            f"the header row {show(','.join(header))} has no `prompt` column.",
            "Make the first row name the columns: prompt, and optionally id, variants and "
            "input fields such as seed or width.",
        )
    for i, name in enumerate(header):
        if not name:
            raise header_place.error(f"column {i + 1} of the header row has no name.", "Name it.")
        if header.count(name) > 1:
            raise header_place.error(f"the column {name!r} appears twice.", "Keep one.")

    entries = []
    end = reader.line_num
    while True:
        start = end + 1
        try:
            row = next(reader, None)
        except csv.Error as exc:
            raise replace(file_place, line=reader.line_num).error(
                f"this row cannot be read as CSV: {exc}.", "Check the quoting."
            ) from None
        if row is None:
            break
        end = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        place = replace(file_place, line=start)
        if len(row) > len(header) and any(cell.strip() for cell in row[len(header) :]):
            raise place.error(
                f"this row has {len(row)} cells but the header names {len(header)} columns.",
                "Quote cells that contain commas.",
            )
        raw: dict[str, Any] = {}
        for name, cell in zip(header, row, strict=False):
            if not cell.strip():
                continue
            if name in ("prompt", "id"):
                raw[name] = cell.strip()
            else:
                raw[name] = _cell_json(cell, allow=_CELL_SHAPES.get(name, ()))
        _check_surrogates(raw, place)
        entries.append(parse_entry(raw, place, rel))
    return entries


# Columns whose cells may hold a JSON list or object; any other cell is a scalar or text.
_CELL_SHAPES: dict[str, tuple[type, ...]] = {"variants": (list,), "vars": (dict,)}


def _cell_json(cell: str, *, allow: tuple[type, ...]) -> Any:
    """A cell that reads as a JSON number, true, false or null becomes that; else it is text."""
    try:
        value = json.loads(cell, parse_constant=_no_constant, object_pairs_hook=_unique_pairs)
    except (ValueError, RecursionError):
        return cell
    if isinstance(value, bool | int | float) or value is None:
        return value
    if allow and isinstance(value, allow):
        return value
    return cell


# --- templates ---------------------------------------------------------------------------------


def placeholders(template: str) -> list[str]:
    """The names of the `{name}` placeholders in `template`, in order of first appearance."""
    names: list[str] = []
    for match in _TOKEN.finditer(template):
        name = match.group(1)
        if name is not None and name not in names:
            names.append(name)
    return names


def template_size(template: str, top: Vars | None, own: Vars | None, place: Place) -> int:
    """How many prompts `template` expands to; InputError for a placeholder without values."""
    if top is None and own is None:
        return 1  # not a template: see expand_template
    return math.prod(len(values) for _, values in _template_values(template, top, own, place))


def expand_template(
    template: str, top: Vars | None, own: Vars | None, place: Place
) -> list[tuple[str, dict[str, VarValue]]]:
    """Every (prompt, values used) the template gives, in the cartesian product's order.

    A prompt is a template only when `vars` is given, at the top level or in the prompt; else
    it is returned as written, braces included, so that files written before templates existed
    keep their prompts and so their keys. In a template, `{{` and `}}` are literal braces.
    """
    if top is None and own is None:
        return [(template, {})]
    columns = _template_values(template, top, own, place)
    names = [name for name, _ in columns]
    result = []
    # product() of no columns is one empty combination: a template without placeholders.
    for combination in itertools.product(*(values for _, values in columns)):
        used = dict(zip(names, combination, strict=True))
        text = _fill(template, {name: str(value) for name, value in used.items()})
        if not text.strip():
            raise place.error(
                f"the prompt {show(template)} is empty with {used}.",
                "Give the placeholders non-empty values, or add text around them.",
            )
        check_prompt(text, place)
        result.append((text, used))
    return result


def _template_values(
    template: str, top: Vars | None, own: Vars | None, place: Place
) -> list[tuple[str, list[VarValue]]]:
    if top is None and own is None:
        return []
    scope = {**(top or {}), **(own or {})}
    columns = []
    for name in placeholders(template):
        values = scope.get(name)
        if not values:
            problem = (
                f"the prompt uses {{{name}}}, but `vars` gives no values for {name!r}."
                if values is None
                else f"the prompt uses {{{name}}}, but `vars` gives {name!r} an empty list."
            )
            raise place.error(
                problem,
                f"Add {name}: [value, ...] under `vars` (top level or in the prompt), or write "
                f"{{{{{name}}}}} for literal braces.",
            )
        columns.append((name, values))
    return columns


def _fill(template: str, values: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        return match.group(0)[0] if name is None else values[name]

    return _TOKEN.sub(one, template)


# --- messages ----------------------------------------------------------------------------------


def dotted(path: Path_) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


def show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
