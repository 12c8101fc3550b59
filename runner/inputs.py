"""Image inputs given as local files: recognising them, referencing them and sending them.

Responsible for: telling URLs from local paths in the image fields of a provider input; checking
a local image (inside the job file's folder, a readable regular file, an image by its first
bytes, within the provider style's size limit); standing in for it with a small marker, so that
the database keeps a reference rather than megabytes of base64 and a job's key follows the file's
content; and, when a job is sent, turning markers back into what the provider takes (plain base64
for BFL style, a data URL for Replicate style) after checking that the file has not changed.

It reads files and does nothing else: no network, no database, and no job-file messages (the
loader turns an `ImageInputError` into an `InputError` that names the file, line and field).
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner import jsontext
from runner.campaign import Style

__all__ = [
    "IMAGE_FIELDS",
    "LIST_FIELDS",
    "MARKER_KEY",
    "MAX_BYTES",
    "FileChangedError",
    "FolderImage",
    "ImageInputError",
    "field_value",
    "find_files",
    "folder_images",
    "is_marker",
    "key_view",
    "make_marker",
    "materialize",
    "resolve_images",
    "sent_size",
    "sniff",
]

# Top-level input fields that take an image: BFL's, then Replicate models' own names.
IMAGE_FIELDS: frozenset[str] = frozenset(
    {
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
    }
)
# The image fields whose value is a list of images; a folder image goes into them as a list of one.
LIST_FIELDS: frozenset[str] = frozenset({"input_images", "image_input", "reference_images"})
# Replicate takes files inline only as data URLs, which it documents for files up to 256 KiB;
# BFL takes base64 in the JSON body, where 20 MiB is far above any image it accepts.
MAX_BYTES: dict[Style, int] = {"replicate": 256 * 1024, "bfl": 20 * 1024 * 1024}
MARKER_KEY = "$file"
_IMAGE_TYPES = "PNG, JPEG, WebP or GIF"
_URL = re.compile(r"(?:https?://|data:)", re.IGNORECASE)
_ANY_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")

Path_ = tuple[str | int, ...]


class ImageInputError(ValueError):
    """A local image named in a job file cannot be used.

    `path` leads from the input mapping to the bad value, such as ("input_images", 2), so that the
    loader can name the field; `todo` says what to do about it.
    """

    def __init__(self, problem: str, todo: str = "", path: Path_ = ()) -> None:
        super().__init__(problem)
        self.problem = problem
        self.todo = todo
        self.path = path


class FileChangedError(Exception):
    """A marker's file is gone, unreadable, or no longer holds the bytes the job was loaded with.

    Sending whatever the file holds now would make a job whose key promises other content, so
    the job fails with this message instead and loading the job file again queues the new image.
    """


@dataclass(frozen=True)
class FolderImage:
    """One image of an `images:` folder: its path relative to the job file's folder, its marker."""

    rel: str
    marker: dict[str, Any]


def sniff(head: bytes) -> str | None:
    """The MIME type of an image from its first bytes (12 are enough), or None if not an image."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None


def is_marker(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get(MARKER_KEY), str)


def make_marker(
    path: Path, style: Style | None = None, *, shown: str | None = None
) -> dict[str, Any]:
    """The marker of the image file at `path`: its absolute path, sha256, size and MIME type.

    With `style`, a file above that style's size limit is refused. Raises ImageInputError naming
    the file as `shown` (default: the path) when it is missing, not a regular file, unreadable,
    too big, or not a PNG, JPEG, WebP or GIF image.
    """
    name = repr(shown if shown is not None else str(path))
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ImageInputError(
            f"the image file {name} does not exist.", "Check the path and run again."
        ) from None
    except (OSError, ValueError) as exc:
        raise ImageInputError(
            f"the image file {name} cannot be read: {exc}.", "Check the path and the file."
        ) from None
    if not stat.S_ISREG(info.st_mode):
        # Checked before opening: opening a named pipe would wait for a writer forever.
        what = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise ImageInputError(f"the image file {name} is {what}.", "Give an image file's path.")
    if style is not None and info.st_size > MAX_BYTES[style]:
        raise _too_big(name, info.st_size, style)
    try:
        data = path.read_bytes()
    except PermissionError:
        raise ImageInputError(
            f"the image file {name} cannot be read (permission denied).", "Make it readable."
        ) from None
    except OSError as exc:
        raise ImageInputError(
            f"the image file {name} cannot be read: {exc}.", "Check the path and the file."
        ) from None
    if style is not None and len(data) > MAX_BYTES[style]:
        raise _too_big(name, len(data), style)
    mime = sniff(data[:12])
    if mime is None:
        raise ImageInputError(
            f"the file {name} is not a {_IMAGE_TYPES} image (it starts with {data[:8]!r}).",
            "Give an image file, or convert it to PNG or JPEG.",
        )
    return {
        MARKER_KEY: str(path.resolve()),
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "mime": mime,
    }


def _too_big(name: str, size: int, style: Style) -> ImageInputError:
    limit = MAX_BYTES[style]
    if style == "replicate":
        return ImageInputError(
            f"the image file {name} is {_kib(size)}; Replicate style providers get a local file "
            f"as a data URL, which is limited to {_kib(limit)}.",
            "Host the image and give its https:// URL instead, or make the file smaller.",
        )
    return ImageInputError(
        f"the image file {name} is {_kib(size)}, more than the {_kib(limit)} a request may carry.",
        "Make the file smaller, or host it and give its https:// URL.",
    )


def _kib(size: int) -> str:
    return f"{size / 1024:,.0f} KiB" if size < 1024 * 1024 else f"{size / 1024 / 1024:,.1f} MiB"


# --- job file side: paths to markers -------------------------------------------------------------


def resolve_images(input: dict[str, Any], base_dir: Path, style: Style) -> dict[str, Any]:
    """A copy of `input` whose image fields hold markers where they held local file paths.

    URLs (http, https, data) pass unchanged, and so does null (it clears a default). Paths are
    relative to `base_dir` and must stay inside it, like the prompts file: a job file from
    someone else must not make us upload files from elsewhere. Only top-level fields are image
    fields; a list in one holds several images.
    """
    result = dict(input)
    for field, value in input.items():
        if field not in IMAGE_FIELDS or value is None:
            continue
        if isinstance(value, list):
            result[field] = [
                _resolve_one(item, (field, i), base_dir, style) for i, item in enumerate(value)
            ]
        else:
            result[field] = _resolve_one(value, (field,), base_dir, style)
    return result


def _resolve_one(value: Any, at: Path_, base_dir: Path, style: Style) -> Any:
    if not isinstance(value, str):
        raise ImageInputError(
            f"found {value!r} ({type(value).__name__}), expected an image: an http(s) URL, a "
            "data: URL, or the path of an image file.",
            "Quote it if it is a path.",
            at,
        )
    if _URL.match(value):
        return value
    if _ANY_SCHEME.match(value):
        raise ImageInputError(
            f"the URL {value!r} is neither http(s) nor data:; providers fetch only those.",
            "Give an https:// URL, or download the image next to the job file and give its path.",
            at,
        )
    target = _inside(value, base_dir, "image file", at)
    if not os.path.lexists(target):
        raise ImageInputError(
            f"{value!r} is neither an http(s) or data: URL nor an existing file (looked for "
            f"{target}).",
            "Give a URL, or the path of an image file relative to the job file's folder.",
            at,
        )
    try:
        return make_marker(target, style, shown=value)
    except ImageInputError as exc:
        raise ImageInputError(exc.problem, exc.todo, at) from None


def _inside(value: str, base_dir: Path, what: str, at: Path_) -> Path:
    if not value.strip():
        raise ImageInputError(f"the {what} path is empty.", "Give a path or a URL.", at)
    try:
        root = base_dir.resolve()
        target = (base_dir / value).resolve()
    except (OSError, ValueError, RuntimeError) as exc:
        raise ImageInputError(
            f"the path {value!r} cannot be used: {exc}.", "Check the path and run again.", at
        ) from None
    if not target.is_relative_to(root):
        raise ImageInputError(
            f"the {what} path {value!r} escapes the folder of the job file ({root}).",
            "Move it into that folder (or a subfolder) and give a relative path, or give a URL.",
            at,
        )
    return target


def folder_images(
    folder: str,
    base_dir: Path,
    style: Style,
    pattern: str | None = None,
    max_files: int | None = None,
) -> list[FolderImage]:
    """The images directly in `folder` (relative to `base_dir`, inside it), sorted by name.

    Hidden files are left out. With `pattern` (matched against names, ignoring case), every match
    must be an image; without it, files that are not images by their first bytes are skipped.
    """
    target = _inside(folder, base_dir, "images folder", ())
    root = base_dir.resolve()
    try:
        names = sorted(entry.name for entry in os.scandir(target))
    except FileNotFoundError:
        raise ImageInputError(f"the folder {folder!r} does not exist.", "Check the path.") from None
    except NotADirectoryError:
        raise ImageInputError(f"{folder!r} is a file, not a folder.", "Give a folder.") from None
    except OSError as exc:
        raise ImageInputError(
            f"the folder {folder!r} cannot be read: {exc}.", "Check the path and its permissions."
        ) from None
    names = [name for name in names if not name.startswith(".")]
    if pattern is not None:
        names = [name for name in names if fnmatch.fnmatchcase(name.lower(), pattern.lower())]
    if max_files is not None and len(names) > max_files:
        raise ImageInputError(
            f"the folder {folder!r} holds {len(names):,} files, more than the {max_files:,} jobs "
            "one job file may make.",
            "Split the folder, or narrow `pattern`.",
        )
    images = []
    for name in names:
        path = target / name
        rel = path.relative_to(root).as_posix()
        try:
            resolved = path.resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
            raise ImageInputError(
                f"{rel!r} cannot be used: {exc}.", "Fix the link, or remove it from the folder."
            ) from None
        if not resolved.is_relative_to(root):
            raise ImageInputError(
                f"{rel!r} links to a file outside the folder of the job file.",
                "Copy the file into the folder instead of linking to it.",
            )
        if pattern is None and not _looks_like_image(path):
            continue
        images.append(FolderImage(rel, make_marker(path, style, shown=rel)))
    if not images:
        matching = f" matching {pattern!r}" if pattern is not None else ""
        raise ImageInputError(
            f"the folder {folder!r} holds no {_IMAGE_TYPES} files{matching}.",
            "Put the images to edit there, or fix `dir` and `pattern`.",
        )
    return images


def _looks_like_image(path: Path) -> bool:
    try:
        if not path.is_file():
            return False
        with path.open("rb") as handle:
            return sniff(handle.read(12)) is not None
    except OSError:
        # Unreadable: let make_marker report it rather than silently dropping a photo.
        return True


def field_value(field: str, marker: dict[str, Any]) -> Any:
    """What a folder image sets `field` to: the marker, in a list for fields that take lists."""
    return [marker] if field in LIST_FIELDS else marker


# --- both sides: markers ---------------------------------------------------------------------


def find_files(input: Any) -> list[dict[str, Any]]:
    """Every marker in `input`, in order, however deep in mappings and lists."""
    found: list[dict[str, Any]] = []

    def collect(marker: dict[str, Any]) -> dict[str, Any]:
        found.append(marker)
        return marker

    _walk(input, collect)
    return found


def key_view(input: Any) -> Any:
    """`input` with each marker reduced to its content (sha256, size, type), for job keys.

    The absolute path is left out so that moving or renaming the job folder keeps every key, and
    so every result already made; a change of content still makes a new key.
    """
    return _walk(input, lambda marker: {k: v for k, v in marker.items() if k != MARKER_KEY})


def materialize(input: dict[str, Any], style: Style) -> dict[str, Any]:
    """A copy of `input` with each marker replaced by its file's bytes, as `style` takes them.

    BFL style gets plain base64 (its image fields document base64, and input_image also takes a
    URL); Replicate style gets a data URL. Raises FileChangedError when a file is gone or its
    sha256 no longer matches the marker.
    """
    if style == "bfl":
        return _walk(input, lambda marker: base64.b64encode(_read(marker)).decode("ascii"))
    if style == "replicate":
        return _walk(input, _data_url)
    raise ValueError(f"unknown provider style {style!r}")


def sent_size(input: dict[str, Any]) -> int:
    """About how many bytes `input` takes once its files are read in (each as a data URL, the
    longer form), without reading them: what a provider's answers may carry back of it."""
    files: list[int] = []

    def counted(marker: dict[str, Any]) -> str:
        size = marker.get("bytes")
        encoded = 4 * -(-size // 3) if isinstance(size, int) else 0
        files.append(encoded + len(f"data:{marker.get('mime', '')};base64,"))
        return ""

    return len(jsontext.dumps(_walk(input, counted)).encode()) + sum(files)


def _data_url(marker: dict[str, Any]) -> str:
    encoded = base64.b64encode(_read(marker)).decode("ascii")
    return f"data:{marker['mime']};base64,{encoded}"


def _read(marker: dict[str, Any]) -> bytes:
    path = marker[MARKER_KEY]
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise FileChangedError(
            f"the image file {path} is gone (moved or deleted after the job file was loaded); "
            "put it back, or load the job file again"
        ) from None
    except OSError as exc:
        raise FileChangedError(f"the image file {path} cannot be read: {exc}") from None
    if hashlib.sha256(data).hexdigest() != marker.get("sha256"):
        raise FileChangedError(
            f"the image file {path} changed after the job file was loaded; load the job file "
            "again to queue a job for the new image"
        )
    return data


def _walk(value: Any, on_marker: Callable[[dict[str, Any]], Any]) -> Any:
    if isinstance(value, dict):
        if is_marker(value):
            return on_marker(value)
        # Scalars are kept without a call each: keys and fingerprints walk every job's input.
        return {
            key: _walk(item, on_marker) if isinstance(item, dict | list) else item
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_walk(item, on_marker) for item in value]
    return value


def has_files(value: Any) -> bool:
    """Whether an input names a local file anywhere (it then needs `materialize`)."""
    if isinstance(value, dict):
        return is_marker(value) or any(has_files(item) for item in value.values())
    if isinstance(value, list):
        return any(has_files(item) for item in value)
    return False
