"""File names for downloaded images, made from a user's template such as "{index:05d}-{slug}.{ext}".

Responsible for: checking a template when the job file is loaded, and turning a job's fields into
one safe file name. Whatever the template and the fields hold (prompts, ids, model names), the
result is a single path component: it can never name a folder or climb out of the output folder.
This module does no I/O.

Template fields:
  campaign  the campaign name
  index     the job's 1-based position in the job file (an int: "{index:05d}" pads it)
  key       the job's stable key (the user's id, or "h" + 20 hex digits)
  id        the user's id for the prompt, or the key when it has none
  slug      the prompt, lowercased ASCII with dashes, at most 40 characters
  variant   0-based variant number within the prompt (an int)
  seed      the seed sent, or empty when the provider picks one (an int otherwise)
  model     the model, with "/" and ":" turned into "-"
  image     the input image's file name without extension, slugified (with `images:`), else empty
  n         1-based number of the image within the job's outputs (an int)
  ext       the image's extension without the dot ("png", "jpg", "webp")
"""

from __future__ import annotations

import functools
import re
import string
import unicodedata
from pathlib import PurePosixPath
from typing import Any, Protocol

TEMPLATE_FIELDS: tuple[str, ...] = (
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
)
DEFAULT_TEMPLATE = "{index:05d}-{slug}.{ext}"
MAX_NAME_BYTES = 200  # well under the 255-byte limit of common file systems, leaving room for temps
_ID_FIELDS = ("index", "key", "id")
# Sample values of the right types, so a format spec that cannot apply ("{slug:05d}") fails early.
_SAMPLE: dict[str, Any] = {
    "campaign": "campaign",
    "index": 1,
    "key": "h0123456789abcdef0123",
    "id": "id",
    "slug": "slug",
    "variant": 0,
    "seed": 1,
    "model": "model",
    "image": "image",
    "n": 1,
    "ext": "png",
}
# NFKD leaves these letters alone; spell them out rather than drop them.
_TRANSLIT = str.maketrans(
    {
        "ß": "ss",
        "æ": "ae",
        "Æ": "AE",
        "œ": "oe",
        "Œ": "OE",
        "ø": "o",
        "Ø": "O",
        "đ": "d",
        "Đ": "D",
        "ł": "l",
        "Ł": "L",
        "þ": "th",
        "Þ": "TH",
        "ð": "d",
        "Ð": "D",
        "ı": "i",
    }
)
# Path separators, NUL and other control characters, and what Windows refuses in a name.
_UNSAFE = re.compile(r'[\x00-\x1f\x7f/\\<>:"|?*]')
# Device names Windows reserves whatever the extension ("CON.png" is the console, not a file).
_WINDOWS_DEVICE = re.compile(r"(CON|PRN|AUX|NUL|COM[0-9¹²³]|LPT[0-9¹²³]|CONIN\$|CONOUT\$)", re.I)
_NOT_SLUG = re.compile(r"[^a-z0-9]+")
_formatter = string.Formatter()


class NamedJob(Protocol):
    """What naming needs of a job: a JobSpec from the loader or a job row from the store."""

    @property
    def key(self) -> str: ...
    @property
    def index(self) -> int: ...
    @property
    def model(self) -> str: ...
    @property
    def meta(self) -> dict[str, Any]: ...


def slugify(text: str, max_len: int = 40) -> str:
    """ASCII lowercase words joined by "-", at most `max_len` characters; "image" if none."""
    if not text.isascii():  # ASCII text is its own transliteration: skip the work
        text = (
            unicodedata.normalize("NFKD", text.translate(_TRANSLIT))
            .encode("ascii", "ignore")
            .decode("ascii")
        )
    slug = _NOT_SLUG.sub("-", text.lower()).strip("-")
    slug = slug[:max_len].rstrip("-")
    return slug or "image"


def validate_template(template: str) -> None:
    """Raise ValueError, with a message for the user, unless `template` makes safe unique names."""
    if not isinstance(template, str) or not template.strip():
        raise ValueError("the file name template is empty; the default is " + DEFAULT_TEMPLATE)
    if "/" in template or "\\" in template or "\x00" in template:
        raise ValueError(
            f"the file name template {template!r} contains a path separator; it names a file "
            "inside the output folder, so set `output.dir` for folders"
        )
    if ".." in template:
        raise ValueError(
            f"the file name template {template!r} contains '..'; names must stay inside the "
            "output folder"
        )
    try:
        parsed = list(_formatter.parse(template))
    except ValueError as exc:
        raise ValueError(
            f"the file name template {template!r} is not valid: {exc}; write fields as "
            "{name} or {name:spec}, and a literal brace as {{ or }}"
        ) from None
    used: set[str] = set()
    for _literal, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in TEMPLATE_FIELDS:
            raise ValueError(
                f"the file name template {template!r} uses the unknown field {{{field}}}; the "
                f"fields are {', '.join(TEMPLATE_FIELDS)}"
            )
        if conversion is not None or (spec and "{" in spec):
            raise ValueError(
                f"the file name template {template!r} uses a conversion or nested field in "
                f"{{{field}}}; only a format spec such as {{index:05d}} is supported"
            )
        # A width or precision is a count of characters: past a file name's length it is a
        # mistake, and a huge one ("{index:999999999999d}") would exhaust memory formatting it.
        for digits in re.findall(r"\d+", spec or ""):
            if len(digits) > len(str(MAX_NAME_BYTES)) or int(digits) > MAX_NAME_BYTES:
                raise ValueError(
                    f"the file name template {template!r} asks for {digits} characters in "
                    f"{{{field}}}, more than the {MAX_NAME_BYTES} a file name may have; use a "
                    "smaller width such as {index:05d}"
                )
        try:
            format(_SAMPLE[field], spec or "")
        except (ValueError, TypeError) as exc:
            raise ValueError(
                f"the file name template {template!r} has a format spec {spec!r} that does not "
                f"fit {{{field}}}: {exc}"
            ) from None
        used.add(field)
    if not used.intersection(_ID_FIELDS):
        raise ValueError(
            f"the file name template {template!r} uses none of {{index}}, {{key}}, {{id}}, so "
            "different jobs would get the same name; add one of them"
        )


def render_filename(
    template: str, fields: dict[str, Any], *, ext: str, n: int, outputs: int
) -> str:
    """One safe file name for image `n` (1-based) of a job that produced `outputs` images.

    Without "{ext}" in the template, "." + ext is appended; with several outputs and no "{n}", "-n"
    goes before the extension so the images of one job do not overwrite each other. A field the
    template uses but `fields` lacks, or a None value, renders as empty. The template is assumed
    valid (see validate_template); the result is sanitised anyway.
    """
    ext = _plain_ext(ext)
    values = {**fields, "ext": ext, "n": n}
    parsed, used = _parse(template)
    name = "".join(
        [
            literal if field is None else literal + _render(values.get(field), spec)
            for literal, field, spec in parsed
        ]
    )
    if "ext" not in used:
        stem, suffix = name, f".{ext}" if ext else ""
    elif ext and name.endswith(f".{ext}"):
        stem, suffix = name[: -len(ext) - 1], f".{ext}"
    else:
        # "{ext}" placed somewhere other than the end: the user chose that layout, keep it.
        stem, suffix = name, ""
    if outputs > 1 and "n" not in used:
        stem = f"{stem}-{n}"
    return _sanitise(stem, suffix)


@functools.lru_cache(maxsize=64)
def _plain_ext(ext: str) -> str:
    # An extension comes from a URL or a content type; keep it short and plain whatever it is.
    return _clean(ext).strip(". ")[:16]


@functools.lru_cache(maxsize=64)
def _parse(template: str) -> tuple[tuple[tuple[str, str | None, str], ...], frozenset[str]]:
    """The template's (literal, field, spec) parts, and the fields it uses.

    Cached: a campaign names every one of its jobs, up to 100,000, with one template.
    """
    parsed = tuple(
        (literal, field, spec or "") for literal, field, spec, _ in _formatter.parse(template)
    )
    return parsed, frozenset(field for _, field, _ in parsed if field is not None)


def job_fields(campaign: str, job: NamedJob) -> dict[str, Any]:
    """The template fields of `job`, except n and ext, which depend on the download.

    The loader checks names with this and the downloader should name files with it too, so that
    the uniqueness checked at load time is the uniqueness on disk.
    """
    meta = job.meta
    return {
        "campaign": campaign,
        "index": job.index,
        "key": job.key,
        # Without an id, the key keeps "{id}" templates unique.
        "id": meta.get("id") or job.key,
        "slug": meta.get("slug") or slugify(str(meta.get("prompt", ""))),
        "variant": meta.get("variant", 0),
        "seed": meta.get("seed"),
        "model": job.model.replace("/", "-").replace(":", "-"),
        "image": slugify(PurePosixPath(meta["image"]).stem) if meta.get("image") else "",
    }


def _render(value: Any, spec: str) -> str:
    if value is None:
        return ""
    try:
        return format(value, spec)
    except (ValueError, TypeError):
        # An odd value (a string seed under "{seed:05d}") still deserves a name, not a crash.
        return str(value)


def _clean(text: str) -> str:
    return _UNSAFE.sub("_", text)


def _sanitise(stem: str, suffix: str) -> str:
    # Leading dots would hide the file (or, alone, name the folder itself); trailing dots and
    # spaces are dropped by Windows and would make two names the same file.
    stem = _clean(stem).lstrip(". ").rstrip(". ") or "image"
    if _WINDOWS_DEVICE.fullmatch(stem.split(".", 1)[0].rstrip(" ")):
        stem = "_" + stem
    budget = MAX_NAME_BYTES - len(suffix.encode("utf-8"))
    encoded = stem.encode("utf-8")
    if len(encoded) > budget:
        stem = encoded[:budget].decode("utf-8", "ignore").rstrip(". ") or "image"
    return stem + suffix
