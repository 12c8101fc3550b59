"""Load a job file (YAML) and its prompts file into a validated, expanded `Campaign`.

Responsible for: reading the files, checking every field, expanding prompts x variants into jobs
with stable keys, and turning every problem into one `InputError` paragraph that names the file,
the field, the line and what to do. It must not touch the database, the network or the
environment, and must not let any other exception escape for bad input: the CLI relies on
`InputError` to tell a user's mistake from a bug.

Key stability is the contract the store builds on: a job's key depends only on the model and the
job's own effective input (or the user's id), never on its position, so appending prompts or
raising `variants` leaves every earlier key, and so every earlier result, in place.
"""

from __future__ import annotations

import copy
import csv
import difflib
import hashlib
import io
import json
import math
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from runner.campaign import Campaign, CampaignSettings, JobSpec, Limits, ProviderConfig
from runner.durations import parse_duration
from runner.errors import InputError
from runner.naming import DEFAULT_TEMPLATE, job_fields, render_filename, slugify, validate_template
from runner.presets import default_limits, resolve_provider

__all__ = ["PROMPTS_FILE_TYPES", "job_key", "load_jobfile"]

PROMPTS_FILE_TYPES = (".txt", ".jsonl", ".csv")
MAX_VARIANTS = 1000  # per prompt; more is almost surely a typo, and each one is billed
_MAX_DEPTH = 64  # nesting of input values; deeper is a recursive YAML alias or a mistake
_NAME_RE = r"^[A-Za-z0-9._-]{1,64}$"
_NAME_CHARS = "1 to 64 characters from A-Z a-z 0-9 . _ -"
_RESERVED = ("prompt", "id", "variants")
_BFL_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_REPLICATE_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_VERSION = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*:)?[0-9a-f]{64}")

# What each field expects, in the user's words; error messages end with it.
_EXPECTED: dict[str, str] = {
    "campaign": f"a campaign name of {_NAME_CHARS}, such as lanterns",
    "provider": "a preset name (replicate, bfl, deerapi-replicate, deerapi-flux, cometapi) or a "
    "mapping",
    "model": "a model name: for BFL style the endpoint such as flux-pro-1.1, for Replicate "
    "style owner/name such as black-forest-labs/flux-1.1-pro",
    "version": "a Replicate version: owner/name:<64 hex digits> or the 64 hex digits alone",
    "input": "a mapping of provider input fields, such as {width: 1024, height: 768}",
    "prompts": "a list of prompts: strings, or mappings with `prompt` and optional `id`, "
    "`variants` and input overrides",
    "prompts_file": "a path to a .txt, .jsonl or .csv file, relative to the job file",
    "variants": f"a number of images per prompt from 1 to {MAX_VARIANTS}, or a list of seeds "
    "such as [11, 22, 33]",
    "output": "a mapping with `dir` (the folder for images) and `name` (the file name template)",
    "output.dir": "a folder path, relative to the job file, such as out/lanterns",
    "output.name": f"a file name template such as {DEFAULT_TEMPLATE}",
    "deadline": 'a duration such as "30m", "1h30m" or "90s"',
    "limits": "a mapping with max_in_flight, creates_per_minute and max_attempts",
    "limits.max_in_flight": "a whole number greater than 0, such as 8",
    "limits.creates_per_minute": "a number greater than 0, such as 120",
    "limits.max_attempts": "a whole number of at least 1, such as 5",
}


class _Strict(BaseModel):
    # Strict: YAML already gives types, so "8" for a number is a mistake worth reporting.
    model_config = ConfigDict(extra="forbid", strict=True)


class _LimitsIn(_Strict):
    max_in_flight: Annotated[int, Field(gt=0)] | None = None
    creates_per_minute: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    max_attempts: Annotated[int, Field(ge=1)] | None = None


class _OutputIn(_Strict):
    dir: Annotated[str, StringConstraints(min_length=1)] | None = None
    name: str | None = None


class _JobFileIn(_Strict):
    campaign: Annotated[str, StringConstraints(pattern=_NAME_RE)]
    provider: Any
    model: str | None = None
    version: str | None = None
    input: dict[str, Any] | None = None
    prompts: list[Any] | None = None
    prompts_file: str | None = None
    # Checked by hand: their shapes are unions whose pydantic errors read poorly.
    variants: Any = None
    output: _OutputIn | None = None
    deadline: Any = None
    limits: _LimitsIn | None = None


_MODELS_AT: dict[tuple[str, ...], type[BaseModel]] = {
    (): _JobFileIn,
    ("limits",): _LimitsIn,
    ("output",): _OutputIn,
}

Path_ = tuple[str | int, ...]
Variants = int | list[int]


@dataclass(frozen=True)
class _Place:
    """Where a value came from, for messages: file (as the user wrote it), line, field."""

    file: str
    line: int | None = None
    field: str = ""
    context: str = ""  # e.g. " (prompts_file of jobs.yaml)"

    def at(self, sub: str) -> _Place:
        return replace(self, field=f"{self.field}.{sub}" if self.field else sub)

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
class _Entry:
    """One prompt as written, before expansion into variants."""

    prompt: str
    id: str | None
    variants: Variants | None
    overrides: dict[str, Any]
    source: str  # "file:line", kept in the job's meta
    place: _Place


@dataclass
class _Doc:
    """The parsed job file: its data plus the YAML node tree that knows every value's line."""

    shown: str
    root: yaml.Node
    data: dict[str, Any]

    def line(self, path: Path_) -> int | None:
        """Line (1-based) of the value at `path`, or of its nearest ancestor that exists.

        None when not even the first step exists: a missing top-level field has no line.
        """
        node: yaml.Node = self.root
        line: int | None = None
        for part in path:
            child: yaml.Node | None = None
            if isinstance(node, yaml.MappingNode):
                for key_node, value_node in node.value:
                    if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(part):
                        # The key's line: for a block value that is the line naming the field.
                        line = key_node.start_mark.line + 1
                        child = value_node
                        break
            elif (
                isinstance(node, yaml.SequenceNode)
                and isinstance(part, int)
                and 0 <= part < len(node.value)
            ):
                child = node.value[part]
                line = child.start_mark.line + 1
            if child is None:
                break
            node = child
        return line

    def place(self, path: Path_) -> _Place:
        return _Place(self.shown, self.line(path), _dotted(path))


def load_jobfile(path: str | os.PathLike[str]) -> Campaign:
    """Read, validate and expand the job file at `path`. Raises InputError on any bad input."""
    shown = os.fspath(path)
    job_path = Path(shown)
    doc = _parse(job_path, shown)
    try:
        spec = _JobFileIn.model_validate(doc.data)
    except ValidationError as exc:
        raise _pydantic_error(doc, exc) from None

    base_dir = job_path.absolute().parent
    settings = _settings(doc, spec, base_dir)
    model = _model(doc, spec, settings.provider)
    defaults = _check_input(spec.input or {}, doc.place(("input",)))
    if "prompt" in defaults:
        raise doc.place(("input", "prompt")).error(
            "`input` sets `prompt`, but prompts come from `prompts` and `prompts_file`.",
            "Move it to `prompts`.",
        )
    default_variants = (
        1 if spec.variants is None else _variants(spec.variants, doc.place(("variants",)))
    )

    entries = [
        _entry(item, doc.place(("prompts", i)), job_path.name)
        for i, item in enumerate(spec.prompts or [])
    ]
    if spec.prompts_file is not None:
        entries += _prompts_file(doc, spec.prompts_file, base_dir)
    if not entries:
        raise _Place(shown).error(
            "no prompts: neither `prompts` nor `prompts_file` gives a single prompt.",
            "List prompts under `prompts:`, or set `prompts_file:` to a .txt file with one "
            "prompt a line (or a .jsonl or .csv file).",
        )
    jobs, duplicates = _expand(entries, model, defaults, default_variants)
    _check_names_unique(doc, settings.name, settings.filename_template, jobs)
    return Campaign(
        settings=settings, jobs=jobs, source=str(job_path.absolute()), duplicates=duplicates
    )


def job_key(model: str, effective_input: dict[str, Any], variant: int, seeded: bool) -> str:
    """The key of a job without a user id: "h" + 20 hex digits of a hash of what is sent.

    The variant number only enters when no seed tells variants apart, so that a seeded job's key
    is the same whichever variant produced that seed.
    """
    obj: dict[str, Any] = {"model": model, "input": effective_input}
    if not seeded and variant > 0:
        obj["variant"] = variant
    canonical = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    return "h" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:20]


# --- reading and parsing ---------------------------------------------------------------------


def _read_text(path: Path, place: _Place, what: str, content: _Place | None = None) -> str:
    """The file's text; errors opening it are reported at `place`, errors in it at `content`."""
    try:
        raw = path.read_bytes()
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
        raise replace(content or place, line=line).error(
            f"{what} is not valid UTF-8 text (byte 0x{raw[exc.start]:02x} cannot be decoded).",
            "Save the file as UTF-8 and run again.",
        ) from None


def _parse(job_path: Path, shown: str) -> _Doc:
    text = _read_text(job_path, _Place(shown), "the job file")
    try:
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
            if root is not None:
                # Before constructing: that merges `<<:` keys into the node, which would then
                # look like repeated keys.
                _check_duplicate_keys(shown, root)
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = exc.problem or exc.context or "unreadable"
        # The problem is often noticed lines after its cause (an unclosed bracket at the end of
        # the file): name where the unfinished construct began too.
        ctx = exc.context_mark
        if exc.context and ctx is not None and ctx.line + 1 != line:
            problem += f" ({exc.context}, which begins on line {ctx.line + 1})"
        elif exc.context:
            problem = f"{exc.context}: {problem}"
        raise _Place(shown, line).error(
            f"this is not valid YAML: {problem}.",
            "Check the indentation and quoting around that line (quote text containing ': ' "
            "or starting with a special character).",
        ) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise _Place(shown, line).error(
            f"the file contains the character U+{exc.character:04X}, which YAML does not allow.",
            "Remove it (control characters usually come from copying binary text).",
        ) from None
    except yaml.YAMLError as exc:
        raise _Place(shown).error(f"this is not valid YAML: {exc}.", "Fix the file.") from None
    except (ValueError, TypeError, AttributeError, OverflowError, RecursionError) as exc:
        # PyYAML's constructors raise plain exceptions for malformed tagged values
        # (`!!int abc`, `!!timestamp x`) and run out of stack on absurd nesting.
        raise _Place(shown).error(
            f"this YAML cannot be read: a value with an explicit !!tag is malformed, or the "
            f"nesting is too deep ({type(exc).__name__}: {exc}).",
            "Remove explicit !!tags and check the nesting.",
        ) from None
    if root is None or data is None:
        raise _Place(shown).error(
            "the file is empty.",
            "Write at least `campaign`, `provider`, `model` and `prompts`; see jobs.example.yaml.",
        )
    if not isinstance(data, dict):
        raise _Place(shown, root.start_mark.line + 1).error(
            f"the top level is {_kind(data)}, expected a mapping of fields such as "
            "`campaign: lanterns`.",
            "See jobs.example.yaml for the layout.",
        )
    return _Doc(shown, root, data)


def _check_duplicate_keys(shown: str, root: yaml.Node) -> None:
    # PyYAML keeps the last of two equal keys silently; a second `prompts:` would drop the first.
    stack: list[yaml.Node] = [root]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            lines: dict[str, int] = {}
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    line = key_node.start_mark.line + 1
                    if key_node.value in lines:
                        raise _Place(shown, line).error(
                            f"the key {key_node.value!r} appears twice in one mapping (lines "
                            f"{lines[key_node.value]} and {line}).",
                            "Keep one of them.",
                        )
                    lines[key_node.value] = line
                stack.append(value_node)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)


def _pydantic_error(doc: _Doc, exc: ValidationError) -> InputError:
    err = exc.errors()[0]
    loc: Path_ = tuple(err["loc"])
    if err["type"] == "invalid_key" or loc[-1:] == ("[key]",):
        key_loc = loc if err["type"] == "invalid_key" else loc[:-1]
        key = err.get("input")
        return replace(doc.place(key_loc[:-1]), line=doc.line(key_loc)).error(
            f"the key {_show(key)} is {_kind(key)}; field names must be text.",
            "Quote it, or remove it.",
        )
    place = doc.place(loc)
    generic = ".".join(str(p) for p in loc if isinstance(p, str))
    expected = _EXPECTED.get(generic, err["msg"].lower())
    if err["type"] == "missing":
        return place.error("this required field is missing.", f"Add it: {expected}.")
    if err["type"] == "extra_forbidden":
        model = _MODELS_AT.get(tuple(str(p) for p in loc[:-1]), _JobFileIn)
        known = list(model.model_fields)
        name = str(loc[-1])
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"Did you mean `{close[0]}`? " if close else ""
        return place.error(
            f"unknown field {name!r}.",
            f"{hint}The fields allowed here are {', '.join(known)}; check the spelling or "
            "remove it.",
        )
    return place.error(
        f"found {_show(err.get('input'))} ({_kind(err.get('input'))}), expected {expected}.",
        "Fix the value and run again.",
    )


# --- fields ----------------------------------------------------------------------------------


def _settings(doc: _Doc, spec: _JobFileIn, base_dir: Path) -> CampaignSettings:
    if set(spec.campaign) == {"."}:
        # The name may become a folder name; "." and ".." would name the wrong folder.
        raise doc.place(("campaign",)).error(
            f"found {spec.campaign!r}, expected {_EXPECTED['campaign']} (not only dots).",
            "Pick another name.",
        )
    provider = _provider(doc, spec.provider)

    output = spec.output or _OutputIn()
    template = output.name if output.name is not None else DEFAULT_TEMPLATE
    try:
        validate_template(template)
    except ValueError as exc:
        raise doc.place(("output", "name")).error(
            f"{exc}.", f"Fix the template; the default is {DEFAULT_TEMPLATE!r}."
        ) from None
    out_dir = output.dir if output.dir is not None else f"out/{spec.campaign}"
    if out_dir.startswith("~"):
        # Expanding it would read the environment; a silent folder named "~" would be worse.
        raise doc.place(("output", "dir")).error(
            f"found {out_dir!r}; '~' is not expanded here.",
            "Write the full path, or a path relative to the job file.",
        )

    deadline = None
    if spec.deadline is not None:
        try:
            deadline = parse_duration(spec.deadline)
        except ValueError as exc:
            raise doc.place(("deadline",)).error(f"{exc}.", "Write it like 30m or 1h30m.") from None

    return CampaignSettings(
        name=spec.campaign,
        provider=provider,
        output_dir=os.path.normpath(base_dir / out_dir),
        filename_template=template,
        deadline_seconds=deadline,
        limits=_limits(provider, spec.limits),
    )


def _provider(doc: _Doc, value: Any) -> ProviderConfig:
    place = doc.place(("provider",))
    if not isinstance(value, str | dict):
        raise place.error(
            f"found {_show(value)} ({_kind(value)}), expected {_EXPECTED['provider']}.",
            "Write for example `provider: bfl`.",
        )
    return resolve_provider(value, place.where())


def _model(doc: _Doc, spec: _JobFileIn, provider: ProviderConfig) -> str:
    if spec.model is not None and spec.version is not None:
        raise doc.place(("version",)).error(
            "both `model` and `version` are set.", "Keep one: `version` pins a Replicate version."
        )
    if spec.version is not None:
        place = doc.place(("version",))
        if provider.style != "replicate":
            raise place.error(
                f"`version` is for Replicate style providers, and {provider.name!r} is "
                f"{provider.style} style.",
                "Use `model:` with the endpoint name, such as flux-pro-1.1.",
            )
        if not _VERSION.fullmatch(spec.version):
            raise place.error(
                f"found {_show(spec.version)}, expected {_EXPECTED['version']}.",
                "Copy the version from the model's page; for the latest version use `model: "
                "owner/name` instead.",
            )
        return spec.version
    if spec.model is None:
        raise _Place(doc.shown).error(
            "the required field `model` is missing.", f"Add it: {_EXPECTED['model']}."
        )
    place = doc.place(("model",))
    if provider.style == "bfl" and not _BFL_MODEL.fullmatch(spec.model):
        raise place.error(
            f"found {_show(spec.model)}, but BFL style providers take the endpoint name, such "
            "as flux-pro-1.1 or flux-dev.",
            "Use the name from the provider's model list.",
        )
    if provider.style == "replicate" and not _REPLICATE_MODEL.fullmatch(spec.model):
        hint = (
            "Put a pinned version under `version:` instead."
            if ":" in spec.model
            else "Write it as owner/name, such as black-forest-labs/flux-1.1-pro."
        )
        raise place.error(
            f"found {_show(spec.model)}, expected a Replicate model as owner/name.", hint
        )
    return spec.model


def _limits(provider: ProviderConfig, given: _LimitsIn | None) -> Limits:
    limits = default_limits(provider)
    if given is None:
        return limits
    if given.max_in_flight is not None:
        limits = replace(limits, max_in_flight=given.max_in_flight)
    if given.creates_per_minute is not None:
        limits = replace(limits, creates_per_minute=float(given.creates_per_minute))
    if given.max_attempts is not None:
        limits = replace(limits, max_attempts=given.max_attempts)
    return limits


def _variants(value: Any, place: _Place) -> Variants:
    expected = _EXPECTED["variants"]
    if isinstance(value, int) and not isinstance(value, bool):
        if not 1 <= value <= MAX_VARIANTS:
            raise place.error(f"found {value}, expected {expected}.", "Fix the number.")
        return value
    if isinstance(value, list):
        if not value or len(value) > MAX_VARIANTS:
            raise place.error(f"found a list of {len(value)} seeds, expected {expected}.")
        for seed in value:
            if isinstance(seed, bool) or not isinstance(seed, int):
                raise place.error(
                    f"the seed {_show(seed)} is not a whole number; expected {expected}.",
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
    raise place.error(f"found {_show(value)} ({_kind(value)}), expected {expected}.")


def _check_input(value: Any, place: _Place) -> dict[str, Any]:
    """Check that `value` is a mapping that JSON can carry: string keys, finite numbers."""
    if not isinstance(value, dict):
        raise place.error(f"found {_kind(value)}, expected {_EXPECTED['input']}.")
    _check_json(value, place, 0)
    return value


def _check_json(value: Any, place: _Place, depth: int) -> None:
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
                    f"the key {_show(key)} is {_kind(key)}; input field names must be text.",
                    "Quote the key.",
                )
            _check_json(item, place.at(key), depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(item, replace(place, field=f"{place.field}[{i}]"), depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise place.error(f"found {value}, which JSON cannot carry.", "Use a finite number.")
    elif value is not None and not isinstance(value, str | int | float | bool):
        raise place.error(
            f"found {_show(value)} ({_kind(value)}), which cannot be sent to a provider.",
            "Quote it to send it as text.",
        )


# --- prompts -----------------------------------------------------------------------------------


def _entry(raw: Any, place: _Place, source_file: str) -> _Entry:
    source = f"{source_file}:{place.line}" if place.line is not None else source_file
    if isinstance(raw, str):
        if not raw.strip():
            raise place.error("the prompt is empty.", "Write a prompt or remove the entry.")
        return _Entry(raw, None, None, {}, source, place)
    if not isinstance(raw, dict):
        raise place.error(
            f"found {_show(raw)} ({_kind(raw)}), expected a prompt: a string, or a mapping with "
            "`prompt` and optional `id`, `variants` and input overrides.",
            "Quote the prompt if it is meant as text.",
        )
    prompt = raw.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        problem = (
            "the prompt mapping has no `prompt`."
            if prompt is None
            else f"`prompt` is {_show(prompt)} ({_kind(prompt)}), expected non-empty text."
        )
        raise place.error(problem, "Give every prompt mapping a `prompt: ...` text.")
    user_id = _entry_id(raw.get("id"), place)
    # A null `variants` means the default, as a missing one does.
    variants = raw.get("variants")
    if variants is not None:
        variants = _variants(variants, place.at("variants"))
    overrides = {k: v for k, v in raw.items() if k not in _RESERVED}
    _check_json(overrides, place, 0)
    return _Entry(prompt, user_id, variants, overrides, source, place)


def _entry_id(value: Any, place: _Place) -> str | None:
    if value is None:
        return None
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not re.fullmatch(_NAME_RE, text):
        raise place.at("id").error(
            f"found {_show(value)}, expected an id of {_NAME_CHARS}.", "Change the id."
        )
    return text


def _prompts_file(doc: _Doc, value: str, base_dir: Path) -> list[_Entry]:
    place = doc.place(("prompts_file",))
    if not value.strip():
        raise place.error("the path is empty.", f"Set it to {_EXPECTED['prompts_file']}.")
    try:
        root = base_dir.resolve()
        target = (base_dir / value).resolve()
    except (OSError, ValueError, RuntimeError) as exc:
        raise place.error(f"the path {value!r} cannot be used: {exc}.") from None
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
    file_place = _Place(value, context=f" (prompts_file of {doc.shown})")
    text = _read_text(target, place, f"the prompts file {str(target)!r}", file_place)
    rel = target.relative_to(root).as_posix()
    if suffix == ".txt":
        return _from_txt(text, file_place, rel)
    if suffix == ".jsonl":
        return _from_jsonl(text, file_place, rel)
    return _from_csv(text, file_place, rel)


def _lines(text: str) -> list[str]:
    # Not str.splitlines: it also splits at U+2028 and friends, which editors do not count.
    return [line.removesuffix("\r") for line in text.split("\n")]


def _from_txt(text: str, file_place: _Place, rel: str) -> list[_Entry]:
    entries = []
    for number, line in enumerate(_lines(text), start=1):
        prompt = line.strip()
        if prompt and not prompt.startswith("#"):
            place = replace(file_place, line=number)
            entries.append(_Entry(prompt, None, None, {}, f"{rel}:{number}", place))
    return entries


def _from_jsonl(text: str, file_place: _Place, rel: str) -> list[_Entry]:
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
                f"found {_kind(raw)}, expected a JSON object with `prompt` or a JSON string.",
                'Write it like {"prompt": "a fox"}.',
            )
        entries.append(_entry(raw, place, rel))
    return entries


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"the key {key!r} appears twice")
        result[key] = value
    return result


def _from_csv(text: str, file_place: _Place, rel: str) -> list[_Entry]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise replace(file_place, line=1).error(f"the header row cannot be read: {exc}.") from None
    if header is None:
        return []
    header = [name.strip() for name in header]
    header_place = replace(file_place, line=1)
    if "prompt" not in header:
        raise header_place.error(
            f"the header row {_show(','.join(header))} has no `prompt` column.",
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
            elif name == "variants":
                raw[name] = _cell_json(cell, allow_list=True)
            else:
                raw[name] = _cell_json(cell, allow_list=False)
        entries.append(_entry(raw, place, rel))
    return entries


def _cell_json(cell: str, *, allow_list: bool) -> Any:
    """A cell that reads as a JSON number, true, false or null becomes that; else it is text."""
    try:
        value = json.loads(cell, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return cell
    if isinstance(value, bool | int | float) or value is None:
        return value
    if allow_list and isinstance(value, list):
        return value
    return cell


# --- expansion ---------------------------------------------------------------------------------


def _expand(
    entries: list[_Entry], model: str, defaults: dict[str, Any], default_variants: Variants
) -> tuple[list[JobSpec], int]:
    ids: dict[str, _Entry] = {}
    for entry in entries:
        if entry.id is None:
            continue
        if entry.id in ids:
            first = ids[entry.id].place
            raise entry.place.error(
                f"the id {entry.id!r} is used twice: at {first.file}{first.context}, line "
                f"{first.line}, and here.",
                "Ids must be unique; rename one.",
            )
        ids[entry.id] = entry

    jobs: list[JobSpec] = []
    owners: dict[str, tuple[_Entry, int]] = {}
    duplicates = 0
    for entry in entries:
        variants = entry.variants if entry.variants is not None else default_variants
        merged = _merge(defaults, entry.overrides)
        merged["prompt"] = entry.prompt
        count = len(variants) if isinstance(variants, list) else variants
        for v in range(count):
            effective = copy.deepcopy(merged)
            seed = _seed(effective, variants, v)
            if seed is not None:
                effective["seed"] = seed
            if entry.id is not None:
                key = entry.id if v == 0 else f"{entry.id}.v{v}"
            else:
                key = job_key(model, effective, v, seeded=seed is not None)
            if key in owners:
                other, other_v = owners[key]
                if entry.id is not None and other.id is not None:
                    raise entry.place.error(
                        f"variant {v} of id {entry.id!r} gets the key {key!r}, which variant "
                        f"{other_v} of id {other.id!r} (line {other.place.line}) already has.",
                        "Rename one of the ids.",
                    )
                duplicates += 1
                continue
            owners[key] = (entry, v)
            jobs.append(
                JobSpec(
                    key=key,
                    index=len(jobs) + 1,
                    model=model,
                    input=effective,
                    meta={
                        "prompt": entry.prompt,
                        "id": entry.id,
                        "variant": v,
                        "seed": seed,
                        "slug": slugify(entry.prompt),
                        "source": entry.source,
                    },
                )
            )
    return jobs, duplicates


def _seed(effective: dict[str, Any], variants: Variants, v: int) -> int | None:
    if isinstance(variants, list):
        return variants[v]
    base = effective.get("seed")
    if isinstance(base, int) and not isinstance(base, bool):
        return base + v
    return None


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep merge: mappings merge key by key, anything else in `override` replaces."""
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = _merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def _check_names_unique(doc: _Doc, campaign: str, template: str, jobs: list[JobSpec]) -> None:
    taken: dict[str, JobSpec] = {}
    for job in jobs:
        name = render_filename(template, job_fields(campaign, job), ext="img", n=1, outputs=1)
        # Compared without case: on macOS and Windows "Fox.png" and "fox.png" are one file.
        folded = name.casefold()
        if folded in taken:
            first = taken[folded]
            raise doc.place(("output", "name")).error(
                f"the template {template!r} gives two jobs the same file name {name!r}: "
                f"{_show(first.meta['prompt'])} ({first.meta['source']}) and "
                f"{_show(job.meta['prompt'])} ({job.meta['source']}).",
                "Add {index} or {key} to the template.",
            )
        taken[folded] = job


# --- messages ----------------------------------------------------------------------------------


def _dotted(path: Path_) -> str:
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _kind(value: Any) -> str:
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


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
