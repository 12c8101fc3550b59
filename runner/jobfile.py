"""Load a job file (YAML) and its prompts file into a validated, expanded `Campaign`.

Responsible for: the job file's schema and every top-level field, expanding prompts into jobs
(prompt templates x folder images x models x variants) with stable keys, and turning every
problem into one `InputError` paragraph that names the file, the field, the line and what to do.
Reading prompt entries and prompts files is `runner.prompts`'s job; checking local images and
standing in for them with markers is `runner.inputs`'s. It must not touch the database, the
network or the environment, and must not let any other exception escape for bad input: the CLI
relies on `InputError` to tell a user's mistake from a bug.

Key stability is the contract the store builds on: a job's key depends only on the model and the
job's own effective input (or the user's id), never on its position, so appending prompts or
raising `variants` leaves every earlier key, and so every earlier result, in place.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import functools
import gc
import hashlib
import itertools
import json
import os
import re
import shlex
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from runner.campaign import (
    DEFAULT_PRIORITY,
    Budget,
    Campaign,
    CampaignSettings,
    JobSpec,
    Limits,
    OnFinish,
    ProviderConfig,
    Style,
    canonical_json,
)
from runner.durations import parse_duration
from runner.errors import InputError
from runner.inputs import (
    IMAGE_FIELDS,
    FolderImage,
    ImageInputError,
    field_value,
    folder_images,
    has_files,
    key_view,
    resolve_images,
)
from runner.naming import DEFAULT_TEMPLATE, job_fields, render_filename, slugify, validate_template
from runner.presets import default_limits, resolve_provider
from runner.prompts import (
    NAME_RE,
    PROMPTS_FILE_EXPECTED,
    PROMPTS_FILE_TYPES,
    SURROGATE,
    VARIANTS_EXPECTED,
    VARS_EXPECTED,
    Entry,
    Place,
    Variants,
    Vars,
    check_json,
    dotted,
    expand_template,
    kind,
    parse_entry,
    parse_variants,
    parse_vars,
    read_prompts_file,
    read_text,
    show,
    template_size,
)

__all__ = [
    "MAX_ALIAS_VALUES",
    "MAX_JOBFILE_BYTES",
    "MAX_JOBS",
    "PROMPTS_FILE_TYPES",
    "job_key",
    "load_jobfile",
]

MAX_JOBS = 100_000  # per job file, after every expansion; beyond is a runaway product of vars
# PyYAML reads about a quarter of a megabyte a second: a bigger file would keep the command
# quiet for longer than anyone waits, and long lists of prompts belong in a prompts file.
MAX_JOBFILE_BYTES = 4 * 1024 * 1024
# Values that YAML aliases (`*name`) may add by repeating their anchors; beyond that the file is
# an alias bomb ("billion laughs"), which would take hours to check and expand.
MAX_ALIAS_VALUES = 1_000_000
_BFL_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_REPLICATE_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
# The JSON that keys hash: what json.dumps(sort_keys=True, separators=(",", ":")) writes,
# without building an encoder each time.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))
_VERSION = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*:)?[0-9a-f]{64}")

# What each field expects, in the user's words; error messages end with it.
_EXPECTED: dict[str, str] = {
    "campaign": "a campaign name of 1 to 64 characters from A-Z a-z 0-9 . _ -, such as lanterns",
    "provider": "a preset name (replicate, bfl, deerapi-replicate, deerapi-flux, cometapi) or a "
    "mapping",
    "model": "a model name: for BFL style the endpoint such as flux-pro-1.1, for Replicate "
    "style owner/name such as black-forest-labs/flux-1.1-pro",
    "models": "a list of model names to run every prompt on, such as [flux-pro-1.1, flux-dev]",
    "version": "a Replicate version: owner/name:<64 hex digits> or the 64 hex digits alone",
    "input": "a mapping of provider input fields, such as {width: 1024, height: 768}",
    "prompts": "a list of prompts: strings, or mappings with `prompt` and optional `id`, "
    "`variants`, `vars` and input overrides",
    "prompts_file": PROMPTS_FILE_EXPECTED,
    "variants": VARIANTS_EXPECTED,
    "vars": VARS_EXPECTED,
    "images": "a mapping with `dir` (a folder of images), `field` (the input field each image "
    "goes to, such as input_image) and optional `pattern` (such as '*.jpg')",
    "images.dir": "a folder path, relative to the job file and inside its folder, such as photos",
    "images.field": "an image input field such as input_image",
    "images.pattern": "a file name pattern such as '*.jpg'",
    "reuse": "true or false",
    "priority": "a whole number from 1 to 100 (the default is 10), such as 20",
    "output": "a mapping with `dir` (the folder for images) and `name` (the file name template)",
    "output.dir": "a folder path, relative to the job file, such as out/lanterns",
    "output.name": f"a file name template such as {DEFAULT_TEMPLATE}",
    "deadline": 'a duration such as "30m", "1h30m" or "90s"',
    "limits": "a mapping with max_in_flight, creates_per_minute, create_burst and max_attempts",
    "limits.max_in_flight": "a whole number greater than 0, such as 8",
    "limits.creates_per_minute": "a number greater than 0, such as 120",
    "limits.max_attempts": "a whole number of at least 1, such as 5",
    "limits.create_burst": "a number of at least 1, at most creates_per_minute, such as 10",
    "budget": "a mapping with max_jobs (creates per run), max_cost (per campaign) and "
    "price_per_image, such as {max_jobs: 500, max_cost: 40, price_per_image: 0.04}",
    "budget.max_jobs": "a whole number greater than 0: at most this many creates per run, "
    "such as 500",
    "budget.max_cost": "a number greater than 0: what the campaign may spend in all, in the "
    "provider's unit (BFL: credits), such as 40",
    "budget.price_per_image": "a number of at least 0: what one job costs, such as 0.04",
    "on_finish": "a mapping with either `command` (run when the campaign ends or pauses) or "
    "`url` (the summary is POSTed to it), such as {command: notify-send done}",
    "on_finish.command": "a command line such as 'notify-send done'",
    "on_finish.url": "an http:// or https:// URL such as https://example.com/hook",
}


class _Strict(BaseModel):
    # Strict: YAML already gives types, so "8" for a number is a mistake worth reporting.
    model_config = ConfigDict(extra="forbid", strict=True)


class _LimitsIn(_Strict):
    max_in_flight: Annotated[int, Field(gt=0)] | None = None
    creates_per_minute: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    max_attempts: Annotated[int, Field(ge=1)] | None = None
    create_burst: Annotated[float, Field(ge=1, allow_inf_nan=False)] | None = None


class _BudgetIn(_Strict):
    max_jobs: Annotated[int, Field(gt=0)] | None = None
    max_cost: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    price_per_image: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None


class _OnFinishIn(_Strict):
    command: Annotated[str, StringConstraints(min_length=1)] | None = None
    url: Annotated[str, StringConstraints(min_length=1)] | None = None


class _OutputIn(_Strict):
    dir: Annotated[str, StringConstraints(min_length=1)] | None = None
    name: str | None = None


class _ImagesIn(_Strict):
    dir: Annotated[str, StringConstraints(min_length=1)]
    field: str
    pattern: Annotated[str, StringConstraints(min_length=1)] | None = None


class _JobFileIn(_Strict):
    campaign: Annotated[str, StringConstraints(pattern=NAME_RE)]
    provider: Any
    model: str | None = None
    models: Any = None
    version: str | None = None
    input: dict[str, Any] | None = None
    prompts: list[Any] | None = None
    prompts_file: str | None = None
    # Checked by hand: their shapes are unions whose pydantic errors read poorly.
    variants: Any = None
    vars: Any = None
    images: _ImagesIn | None = None
    reuse: bool | None = None
    priority: Annotated[int, Field(ge=1, le=100)] | None = None
    output: _OutputIn | None = None
    deadline: Any = None
    limits: _LimitsIn | None = None
    budget: _BudgetIn | None = None
    on_finish: _OnFinishIn | None = None


_MODELS_AT: dict[tuple[str, ...], type[BaseModel]] = {
    (): _JobFileIn,
    ("limits",): _LimitsIn,
    ("output",): _OutputIn,
    ("images",): _ImagesIn,
    ("budget",): _BudgetIn,
    ("on_finish",): _OnFinishIn,
}

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class _Matrix:
    """What multiplies every prompt besides its own templates and variants."""

    models: list[str]
    top_vars: Vars | None = None
    image_field: str = ""
    images: list[FolderImage] = field(default_factory=list)
    reuse: bool = False


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
                    if _is_key(key_node, part):
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

    def place(self, path: Path_) -> Place:
        return Place(self.shown, self.line(path), dotted(path))


def _is_key(node: yaml.Node, part: Any) -> bool:
    """Whether the mapping key `node` is `part`, a step of a path into the loaded data."""
    if not isinstance(node, yaml.ScalarNode):
        return False
    if node.value == str(part):
        return True
    if isinstance(part, str) or node.style is not None:
        return False
    # A key that is not text (`~`, `true`, `1.5`) is only found by its value as YAML reads it.
    try:
        return bool(yaml.safe_load(node.value) == part)
    except yaml.YAMLError:
        return False


def load_jobfile(path: str | os.PathLike[str]) -> Campaign:
    """Read, validate and expand the job file at `path`. Raises InputError on any bad input."""
    with _collector_paused():
        return _load(path)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a job file is loaded.

    100,000 prompts make a few hundred thousand objects that all stay alive, and the collector
    walks every one of them again each time their number has grown by a quarter: a quarter of
    the loading time, to find no garbage. Reference counting frees everything as usual meanwhile.
    """
    if not gc.isenabled():  # paused already, by whoever will resume it
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _load(path: str | os.PathLike[str]) -> Campaign:
    shown = os.fspath(path)
    job_path = Path(shown)
    doc = _parse(job_path, shown)
    try:
        spec = _JobFileIn.model_validate(doc.data)
    except ValidationError as exc:
        raise _pydantic_error(doc, exc) from None

    base_dir = job_path.absolute().parent
    settings = _settings(doc, spec, base_dir)
    style = settings.provider.style
    models = _models(doc, spec, settings.provider)
    defaults = _check_input(spec.input or {}, doc.place(("input",)))
    if "prompt" in defaults:
        raise doc.place(("input", "prompt")).error(
            "`input` sets `prompt`, but prompts come from `prompts` and `prompts_file`.",
            "Move it to `prompts`.",
        )
    defaults = _local_images(defaults, base_dir, style, functools.partial(_at, doc, ("input",)))
    default_variants = (
        1 if spec.variants is None else parse_variants(spec.variants, doc.place(("variants",)))
    )
    top_vars = None if spec.vars is None else parse_vars(spec.vars, doc.place(("vars",)))

    entries: list[Entry] = []
    for i, item in enumerate(spec.prompts or []):
        entry = parse_entry(item, doc.place(("prompts", i)), job_path.name)
        locate = functools.partial(_at, doc, ("prompts", i))
        entry.overrides = _local_images(entry.overrides, base_dir, style, locate)
        entries.append(entry)
    if spec.prompts_file is not None:
        place = doc.place(("prompts_file",))
        for entry in read_prompts_file(spec.prompts_file, place, base_dir, doc.shown):
            if entry.overrides:  # most lines are a prompt alone: nothing to resolve
                locate = functools.partial(_below, entry.place)
                entry.overrides = _local_images(entry.overrides, base_dir, style, locate)
            entries.append(entry)
    if not entries and spec.prompts_file is not None and not spec.prompts:
        raise doc.place(("prompts_file",)).error(
            f"the prompts file {spec.prompts_file!r} holds no prompts.",
            "Write one prompt a line in a .txt file (lines starting with # are skipped), one "
            "JSON object a line in a .jsonl file, or rows under the header in a .csv file.",
        )
    if not entries:
        raise Place(shown).error(
            "no prompts: neither `prompts` nor `prompts_file` gives a single prompt.",
            "List prompts under `prompts:`, or set `prompts_file:` to a .txt file with one "
            "prompt a line (or a .jsonl or .csv file).",
        )
    matrix = _Matrix(models, top_vars, reuse=bool(spec.reuse))
    if spec.images is not None:
        _check_image_field(doc, spec.images, defaults, entries)
        matrix = replace(
            matrix, image_field=spec.images.field, images=_folder(doc, spec.images, base_dir, style)
        )
    _check_size(doc, entries, matrix, default_variants)
    jobs, duplicates = _expand(entries, matrix, defaults, default_variants)
    _check_names_unique(doc, settings.name, settings.filename_template, jobs)
    return Campaign(
        settings=settings, jobs=jobs, source=str(job_path.absolute()), duplicates=duplicates
    )


def job_key(model: str, effective_input: dict[str, Any], variant: int, seeded: bool) -> str:
    """The key of a job without a user id: "h" + 20 hex digits of a hash of what is sent.

    The variant number only enters when no seed tells variants apart, so that a seeded job's key
    is the same whichever variant produced that seed. A local image enters by its content, not
    its path (see `runner.inputs.key_view`).
    """
    view = key_view(effective_input)
    return _view_key(model, view, canonical_json(view), variant, seeded)


def _view_key(model: str, view: Any, view_json: str, variant: int, seeded: bool) -> str:
    """`job_key` of the input whose `key_view` is `view`, and `input_view` is `view_json`.

    What is hashed is json.dumps(sort_keys=True, separators=(",", ":")) of {"input": view,
    "model": model} (and "variant"), as it has always been; it is written around `view_json`,
    which the store hashes again for the fingerprint, rather than encoding the input twice.
    """
    if not view_json.isascii() or "\x7f" in view_json:
        # json.dumps escapes these characters, which `view_json` holds as they are.
        view_json = _CANONICAL.encode(view)
    text = f'{{"input":{view_json},"model":{_CANONICAL.encode(model)}'
    if not seeded and variant > 0:
        text += f',"variant":{variant}'
    return "h" + hashlib.sha256(f"{text}}}".encode()).hexdigest()[:20]


def _digest(obj: Any) -> str:
    return hashlib.sha256(_CANONICAL.encode(obj).encode("utf-8")).hexdigest()


# --- reading and parsing ---------------------------------------------------------------------


def _parse(job_path: Path, shown: str) -> _Doc:
    text = read_text(
        job_path,
        Place(shown),
        "the job file",
        max_bytes=MAX_JOBFILE_BYTES,
        todo_big="Put long lists of prompts in a `prompts_file` (.txt, .jsonl or .csv) instead.",
    )
    try:
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
            if root is not None:
                # Before constructing: that merges `<<:` keys into the node, which would then
                # look like repeated keys, and expands aliases.
                _check_nodes(shown, root)
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
        raise Place(shown, line).error(
            f"this is not valid YAML: {problem}.",
            "Check the indentation and quoting around that line (quote text containing ': ' "
            "or starting with a special character).",
        ) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise Place(shown, line).error(
            f"the file contains the character U+{exc.character:04X}, which YAML does not allow.",
            "Remove it (control characters usually come from copying binary text).",
        ) from None
    except yaml.YAMLError as exc:
        raise Place(shown).error(f"this is not valid YAML: {exc}.", "Fix the file.") from None
    except RecursionError:
        raise Place(shown).error(
            "this YAML cannot be read: its lists and mappings are nested too deeply.",
            "Check the brackets and the indentation; a job file needs only a few levels.",
        ) from None
    except (ValueError, TypeError, AttributeError, OverflowError) as exc:
        # PyYAML's constructors raise plain exceptions for malformed tagged values
        # (`!!int abc`, `!!timestamp x`) and for numbers Python will not convert.
        if "integer string conversion" in str(exc):
            raise Place(shown).error(
                f"this YAML cannot be read: a number has more than {sys.get_int_max_str_digits()} "
                "digits.",
                "Quote it to make it text, or shorten it.",
            ) from None
        raise Place(shown).error(
            f"this YAML cannot be read: a value with an explicit !!tag is malformed ({exc}).",
            "Remove the !!tag, or fix the value to match it.",
        ) from None
    if root is None or data is None:
        raise Place(shown).error(
            "the file is empty.",
            "Write at least `campaign`, `provider`, `model` and `prompts`; see jobs.example.yaml.",
        )
    if not isinstance(data, dict):
        raise Place(shown, root.start_mark.line + 1).error(
            f"the top level is {kind(data)}, expected a mapping of fields such as "
            "`campaign: lanterns`.",
            "See jobs.example.yaml for the layout.",
        )
    return _Doc(shown, root, data)


def _check_nodes(shown: str, root: yaml.Node) -> None:
    """Refuse what PyYAML would accept silently or choke on later: repeated keys, text that
    cannot be encoded, and aliases that expand to an enormous document."""
    stack: list[yaml.Node] = [root]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode) and SURROGATE.search(node.value):
            raise Place(shown, node.start_mark.line + 1).error(
                f"the text {show(node.value)} holds a \\u escape for half a character (a "
                "UTF-16 surrogate, which YAML does not pair up), which cannot be stored.",
                "Write the character itself, or escape it whole as \\U followed by 8 hex "
                "digits, such as \\U0001F600.",
            )
        if isinstance(node, yaml.MappingNode):
            # PyYAML keeps the last of two equal keys silently; a second `prompts:` would drop
            # the first.
            lines: dict[str, int] = {}
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode):
                    line = key_node.start_mark.line + 1
                    if key_node.value in lines:
                        raise Place(shown, line).error(
                            f"the key {key_node.value!r} appears twice in one mapping (lines "
                            f"{lines[key_node.value]} and {line}).",
                            "Keep one of them.",
                        )
                    lines[key_node.value] = line
                stack.extend((key_node, value_node))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    added = _expanded_size(root) - len(seen)
    if added > MAX_ALIAS_VALUES:
        raise Place(shown).error(
            f"the YAML aliases (*name) in this file expand it by {added:,} values, more than "
            f"the {MAX_ALIAS_VALUES:,} a job file may add that way.",
            "Write the values out, or use fewer and smaller aliases.",
        )


def _expanded_size(root: yaml.Node) -> int:
    """How many values the document has once every alias is replaced by what it refers to.

    Counted over the node graph, where an alias is a shared node, so an alias bomb costs no more
    than its text. A node inside itself (a recursive alias) counts once; later checks report it.
    """
    size: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        children: list[yaml.Node] = []
        if isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        if children_done:
            size[id(node)] = 1 + sum(size[id(child)] for child in children)
        elif id(node) not in size:
            size[id(node)] = 1  # until its children are counted; what a cycle sees
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in size)
    return size[id(root)]


def _pydantic_error(doc: _Doc, exc: ValidationError) -> InputError:
    err = exc.errors()[0]
    loc: Path_ = tuple(err["loc"])
    if err["type"] == "invalid_key" or loc[-1:] == ("[key]",):
        key_loc = loc if err["type"] == "invalid_key" else loc[:-1]
        key = err.get("input")
        # The location holds the key as text ("None" for `~`); the line is found by the key.
        line = doc.line((*key_loc[:-1], key))
        return replace(doc.place(key_loc[:-1]), line=line).error(
            f"the key {show(key)} is {kind(key)}; field names must be text.",
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
        f"found {show(err.get('input'))} ({kind(err.get('input'))}), expected {expected}.",
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

    if "\0" in out_dir:
        raise doc.place(("output", "dir")).error(
            f"found {show(out_dir)}, which holds a NUL character; no folder can be named so.",
            "Remove it.",
        )

    deadline = None
    if spec.deadline is not None:
        try:
            deadline = parse_duration(spec.deadline)
        except ValueError as exc:
            raise doc.place(("deadline",)).error(f"{exc}.", "Write it like 30m or 1h30m.") from None
        except OverflowError:
            raise doc.place(("deadline",)).error(
                f"found {show(spec.deadline)}, a number too large for a duration.",
                "Write it like 30m or 1h30m.",
            ) from None

    return CampaignSettings(
        name=spec.campaign,
        provider=provider,
        output_dir=os.path.normpath(base_dir / out_dir),
        filename_template=template,
        deadline_seconds=deadline,
        limits=_limits(provider, spec.limits),
        priority=DEFAULT_PRIORITY if spec.priority is None else spec.priority,
        budget=_budget(doc, spec.budget, provider),
        on_finish=_on_finish(doc, spec.on_finish),
    )


def _budget(doc: _Doc, given: _BudgetIn | None, provider: ProviderConfig) -> Budget:
    if given is None:
        return Budget()
    if given.max_cost is not None and given.price_per_image is None and provider.style != "bfl":
        raise doc.place(("budget", "max_cost")).error(
            f"`max_cost` is set, but {provider.name!r} is {provider.style} style, whose API "
            "reports no cost, so the runner cannot count what the campaign spends.",
            "Add `price_per_image` (what one image costs) to `budget`, or remove `max_cost`.",
        )
    return Budget(
        max_jobs=given.max_jobs,
        max_cost=None if given.max_cost is None else float(given.max_cost),
        price_per_image=None if given.price_per_image is None else float(given.price_per_image),
    )


def _on_finish(doc: _Doc, given: _OnFinishIn | None) -> OnFinish | None:
    if given is None:
        return None
    if (given.command is None) == (given.url is None):
        raise doc.place(("on_finish",)).error(
            "`on_finish` needs exactly one of `command` and `url`"
            + (", and has both." if given.command is not None else ", and has neither."),
            "Write `on_finish: {command: notify-send done}` or `on_finish: {url: "
            "https://example.com/hook}`.",
        )
    if given.command is not None:
        try:
            words = shlex.split(given.command)
        except ValueError as exc:
            raise doc.place(("on_finish", "command")).error(
                f"found {show(given.command)}, which cannot be split into words ({exc}).",
                "Close the quote, or quote the words that hold spaces.",
            ) from None
        if not words:
            raise doc.place(("on_finish", "command")).error(
                "the command is blank.", f"Write {_EXPECTED['on_finish.command']}."
            )
        return OnFinish(command=given.command)
    assert given.url is not None
    if not re.fullmatch(r"https?://[^\s/]+\S*", given.url):
        raise doc.place(("on_finish", "url")).error(
            f"found {show(given.url)}, expected {_EXPECTED['on_finish.url']}.",
            "Fix the URL and run again.",
        )
    return OnFinish(url=given.url)


def _provider(doc: _Doc, value: Any) -> ProviderConfig:
    place = doc.place(("provider",))
    if not isinstance(value, str | dict):
        raise place.error(
            f"found {show(value)} ({kind(value)}), expected {_EXPECTED['provider']}.",
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
                f"found {show(spec.version)}, expected {_EXPECTED['version']}.",
                "Copy the version from the model's page; for the latest version use `model: "
                "owner/name` instead.",
            )
        return spec.version
    if spec.model is None:
        raise Place(doc.shown).error(
            "the required field `model` (or `models`) is missing.",
            f"Add it: {_EXPECTED['model']}.",
        )
    return _model_name(spec.model, doc.place(("model",)), provider)


def _models(doc: _Doc, spec: _JobFileIn, provider: ProviderConfig) -> list[str]:
    """The models every prompt runs on: `models`, or the one `model` or `version`."""
    if spec.models is None:
        return [_model(doc, spec, provider)]
    place = doc.place(("models",))
    if spec.model is not None:
        raise place.error(
            "both `model` and `models` are set.",
            "Keep one: `models` runs every prompt on each model it lists.",
        )
    if spec.version is not None:
        raise place.error(
            "both `models` and `version` are set; a pinned version is a single model.",
            "Keep `version` alone, or list owner/name models under `models`.",
        )
    if not isinstance(spec.models, list) or not spec.models:
        raise place.error(
            f"found {show(spec.models)} ({kind(spec.models)}), expected {_EXPECTED['models']}.",
            "Fix the value and run again.",
        )
    names = [
        _model_name(name, doc.place(("models", i)), provider) for i, name in enumerate(spec.models)
    ]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise doc.place(("models", i)).error(
                f"the model {name!r} is listed twice, which would make every job twice.",
                "Remove the repeat.",
            )
    return names


def _model_name(value: Any, place: Place, provider: ProviderConfig) -> str:
    if not isinstance(value, str):
        raise place.error(
            f"found {show(value)} ({kind(value)}), expected {_EXPECTED['model']}.",
            "Fix the value and run again.",
        )
    if provider.style == "bfl" and not _BFL_MODEL.fullmatch(value):
        raise place.error(
            f"found {show(value)}, but BFL style providers take the endpoint name, such "
            "as flux-pro-1.1 or flux-dev.",
            "Use the name from the provider's model list.",
        )
    if provider.style == "replicate" and not _REPLICATE_MODEL.fullmatch(value):
        hint = (
            "Put a pinned version under `version:` instead."
            if ":" in value
            else "Write it as owner/name, such as black-forest-labs/flux-1.1-pro."
        )
        raise place.error(f"found {show(value)}, expected a Replicate model as owner/name.", hint)
    return value


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
    if given.create_burst is not None:
        limits = replace(limits, create_burst=float(given.create_burst))
    return limits


def _check_input(value: Any, place: Place) -> dict[str, Any]:
    """Check that `value` is a mapping that JSON can carry: string keys, finite numbers."""
    if not isinstance(value, dict):
        raise place.error(
            f"found {kind(value)}, expected {_EXPECTED['input']}.", "Fix the value and run again."
        )
    check_json(value, place)
    return value


# --- images ------------------------------------------------------------------------------------


def _at(doc: _Doc, prefix: Path_, path: Path_) -> Place:
    return doc.place((*prefix, *path))


def _below(place: Place, path: Path_) -> Place:
    return place.at(dotted(path))


# Input fields that are runner's to decide, per style. BFL answers a create that asks for a
# webhook without a polling URL, and runner finds every result by polling.
_RUNNER_OWNED: dict[str, tuple[str, ...]] = {"bfl": ("webhook_url", "webhook_secret")}


def _local_images(
    values: dict[str, Any], base_dir: Path, style: Style, locate: Callable[[Path_], Place]
) -> dict[str, Any]:
    """`values` with local image paths replaced by markers; `locate` places a bad one. Fields
    that runner owns (`_RUNNER_OWNED`) are refused here too, wherever an input is given."""
    for name in _RUNNER_OWNED.get(style, ()):
        if name in values:
            raise locate((name,)).error(
                f"the input sets `{name}`, but runner follows every {style} style task by "
                "polling it, and the provider answers a create with a webhook without the "
                "polling URL runner needs.",
                f"Remove `{name}`: runner downloads each result as soon as it is ready.",
            )
    try:
        return resolve_images(values, base_dir, style)
    except ImageInputError as exc:
        raise locate(exc.path).error(exc.problem, exc.todo) from None


def _check_image_field(
    doc: _Doc, given: _ImagesIn, defaults: dict[str, Any], entries: list[Entry]
) -> None:
    name = given.field
    if name not in IMAGE_FIELDS:
        close = difflib.get_close_matches(name, IMAGE_FIELDS, n=1)
        hint = f"Did you mean `{close[0]}`? " if close else ""
        raise doc.place(("images", "field")).error(
            f"found {show(name)}, which is not an image field.",
            f"{hint}The image fields are {', '.join(sorted(IMAGE_FIELDS))}.",
        )
    if given.pattern is not None and re.search(r"[/\\]", given.pattern):
        raise doc.place(("images", "pattern")).error(
            f"found {given.pattern!r}; the pattern matches file names in `dir`, not paths.",
            "Put the folder in `dir` and only the name pattern, such as '*.jpg', here.",
        )
    # Two sources for one field would leave one of them silently unused.
    if name in defaults:
        raise doc.place(("input", name)).error(
            f"`input` sets `{name}`, which `images` sets for every job.", "Remove one of them."
        )
    for entry in entries:
        if name in entry.overrides:
            raise entry.place.at(name).error(
                f"the prompt sets `{name}`, which `images` sets for every job.",
                "Remove one of them.",
            )


def _folder(doc: _Doc, given: _ImagesIn, base_dir: Path, style: Style) -> list[FolderImage]:
    try:
        return folder_images(given.dir, base_dir, style, given.pattern, max_files=MAX_JOBS)
    except ImageInputError as exc:
        raise doc.place(("images", "dir")).error(exc.problem, exc.todo) from None


# --- expansion ---------------------------------------------------------------------------------


def _check_size(
    doc: _Doc, entries: list[Entry], matrix: _Matrix, default_variants: Variants
) -> None:
    """Refuse a file that would expand past MAX_JOBS, counting before building any job."""
    per_prompt = len(matrix.models) * max(1, len(matrix.images))
    total, biggest, worst = 0, 0, entries[0]
    for entry in entries:
        variants = entry.variants if entry.variants is not None else default_variants
        count = template_size(entry.prompt, matrix.top_vars, entry.vars, entry.place)
        count *= per_prompt * _variant_count(variants)
        total += count
        if count > biggest:
            biggest, worst = count, entry
    if total > MAX_JOBS:
        raise Place(doc.shown).error(
            f"the file expands to {total:,} jobs, more than the {MAX_JOBS:,} one job file may "
            f"make; the most ({biggest:,}) come from the prompt at {worst.place.where()}.",
            "Give fewer values in `vars`, `models` or `variants`, fewer images, or split the file.",
        )


def _variant_count(variants: Variants) -> int:
    return len(variants) if isinstance(variants, list) else variants


def _expand(
    entries: list[Entry], matrix: _Matrix, defaults: dict[str, Any], default_variants: Variants
) -> tuple[list[JobSpec], int]:
    _check_ids_unique(entries)
    jobs: list[JobSpec] = []
    # Each key's first job: its entry and variant when it has an id (to name both when an id
    # collides), else None.
    owners: dict[str, tuple[Entry, int] | None] = {}
    duplicates = 0
    several_models = len(matrix.models) > 1
    images: list[FolderImage | None] = [*matrix.images] or [None]
    # A prompts file gives up to 100,000 prompts that differ in their text alone: what their
    # jobs share is worked out once, not once a prompt. Jobs share what their input has besides
    # prompt, image and seed, nested values included: nothing changes an input once it is made.
    plain = _merge(defaults, {})
    plain_seeds = _seeds(plain, default_variants)
    plain_splice = _prompt_splice(plain)
    for entry in entries:
        if entry.overrides or entry.variants is not None:
            merged = _merge(defaults, entry.overrides)
            variants = entry.variants if entry.variants is not None else default_variants
            seeds = _seeds(merged, variants)
            splice = _prompt_splice(merged)
        else:
            merged, seeds, splice = plain, plain_seeds, plain_splice
        for prompt, used in expand_template(entry.prompt, matrix.top_vars, entry.vars, entry.place):
            slug = slugify(prompt)
            for image, model, (v, seed) in itertools.product(images, matrix.models, seeds):
                effective = {**merged, "prompt": prompt}
                if image is not None:
                    effective[matrix.image_field] = field_value(matrix.image_field, image.marker)
                if seed is not None:
                    effective["seed"] = seed
                if splice is not None and image is None and seed is None:
                    view, view_json = effective, f"{splice[0]}{canonical_json(prompt)}{splice[1]}"
                else:
                    view = key_view(effective)
                    view_json = canonical_json(view)
                if entry.id is not None:
                    key = _id_key(entry.id, used, image, v, model if several_models else None)
                else:
                    key = _view_key(model, view, view_json, v, seeded=seed is not None)
                if key in owners:
                    first = owners[key]
                    if entry.id is not None and first is not None:
                        other, other_v = first
                        raise entry.place.error(
                            f"variant {v} of id {entry.id!r} gets the key {key!r}, which "
                            f"variant {other_v} of id {other.id!r} (line {other.place.line}) "
                            "already has.",
                            "Rename one of the ids.",
                        )
                    duplicates += 1
                    continue
                owners[key] = None if entry.id is None else (entry, v)
                meta: dict[str, Any] = {
                    "prompt": prompt,
                    "id": entry.id,
                    "variant": v,
                    "seed": seed,
                    "slug": slug,
                    "source": entry.source,
                }
                # Only what a job has, so that files without the newer fields keep their old meta.
                if used:
                    meta["vars"] = used
                if image is not None:
                    meta["image"] = image.rel
                if matrix.reuse:
                    meta["reuse"] = True
                index = len(jobs) + 1
                jobs.append(
                    JobSpec(
                        key=key,
                        index=index,
                        model=model,
                        input=effective,
                        meta=meta,
                        view=view_json,
                    )
                )
    return jobs, duplicates


# Stands for the prompt in `_prompt_splice`; NUL never is in a prompt (`check_prompt`).
_PROMPT_MARK = "\x00prompt\x00"


def _prompt_splice(base: dict[str, Any]) -> tuple[str, str] | None:
    """What `input_view({**base, "prompt": p})` writes before and after the text of p, when
    `base` names no local file; None when it does.

    Such an input is its own key view, and its canonical JSON is the same for every prompt but
    for the prompt's own text: a prompts file's jobs are written around it, rather than walked
    and encoded whole, one job at a time.
    """
    if has_files(base):
        return None
    mark = canonical_json(_PROMPT_MARK)
    head, found, tail = canonical_json({**base, "prompt": _PROMPT_MARK}).partition(mark)
    if not found or mark in tail:  # another value holds the same text
        return None
    return head, tail


def _check_ids_unique(entries: list[Entry]) -> None:
    ids: dict[str, Entry] = {}
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


def _id_key(
    user_id: str, used: dict[str, Any], image: FolderImage | None, v: int, model: str | None
) -> str:
    """The key of a job whose prompt has an id: the id, plus what tells its expansions apart.

    Template values and the folder image enter as a hash of themselves, never a position, so
    that adding a value or an image keeps every earlier key; "~" and "@" cannot occur in an id,
    so these keys never meet another prompt's.
    """
    key = user_id
    apart: dict[str, Any] = {}
    if used:
        apart["vars"] = used
    if image is not None:
        apart["image"] = image.rel
    if apart:
        key += "~" + _digest(apart)[:10]
    if v > 0:
        key += f".v{v}"
    if model is not None:
        key += f"@{model}"
    return key


def _seeds(input: dict[str, Any], variants: Variants) -> list[tuple[int, int | None]]:
    """Each variant's number and seed (None: the provider picks one)."""
    return [(v, _seed(input, variants, v)) for v in range(_variant_count(variants))]


def _seed(input: dict[str, Any], variants: Variants, v: int) -> int | None:
    if isinstance(variants, list):
        return variants[v]
    base = input.get("seed")
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
    if template == DEFAULT_TEMPLATE:
        return  # each name begins with its own job's index and a dash: never two alike
    taken: dict[str, JobSpec] = {}
    for job in jobs:
        name = render_filename(template, job_fields(campaign, job), ext="img", n=1, outputs=1)
        # Compared without case: on macOS and Windows "Fox.png" and "fox.png" are one file.
        folded = name.casefold()
        if folded in taken:
            first = taken[folded]
            raise doc.place(("output", "name")).error(
                f"the template {template!r} gives two jobs the same file name {name!r}: "
                f"{show(first.meta['prompt'])} ({first.meta['source']}) and "
                f"{show(job.meta['prompt'])} ({job.meta['source']}).",
                "Add {index} or {key} to the template.",
            )
        taken[folded] = job
