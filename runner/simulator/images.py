"""Drawing the simulator's output images, and deciding their size and format from an input.

Each image is a real, decodable file: a flat color derived from (prompt, seed, output index)
with the prompt written on it, so a person looking at a folder of results can tell them apart
and a test can check that a file belongs to its prompt. Drawing is deterministic: the same
arguments give the same bytes, which lets tests compare checksums across downloads.
"""

from __future__ import annotations

import hashlib
import io
import textwrap
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any, TypeGuard

from PIL import Image, ImageDraw, ImageFont

# file extension -> (Pillow format name, Content-Type)
FORMATS: dict[str, tuple[str, str]] = {
    "png": ("PNG", "image/png"),
    "jpg": ("JPEG", "image/jpeg"),
    "jpeg": ("JPEG", "image/jpeg"),
    "webp": ("WEBP", "image/webp"),
}

_NAMED_RATIOS = {"match_input_image": (1.0, 1.0), "custom": (1.0, 1.0)}


def content_type(ext: str) -> str:
    return FORMATS[ext][1]


def parse_aspect_ratio(value: Any) -> tuple[float, float] | None:
    """`"16:9"` -> (16, 9); anything unreadable -> None so the caller falls back to a default."""
    if not isinstance(value, str):
        return None
    if value in _NAMED_RATIOS:
        return _NAMED_RATIOS[value]
    left, sep, right = value.partition(":")
    if not sep:
        return None
    try:
        w, h = float(left), float(right)
    except ValueError:
        return None
    if w <= 0 or h <= 0:
        return None
    return w, h


def requested_size(
    inputs: Mapping[str, Any], default: tuple[int, int] = (1024, 1024)
) -> tuple[int, int]:
    """The size the caller asked for, before the simulator shrinks it."""
    width, height = inputs.get("width"), inputs.get("height")
    if _positive_int(width) and _positive_int(height):
        return width, height
    ratio = parse_aspect_ratio(inputs.get("aspect_ratio"))
    if ratio is not None and inputs.get("aspect_ratio") not in _NAMED_RATIOS:
        # about one megapixel, as FLUX models produce for an aspect ratio
        w, h = ratio
        scale = (1024 * 1024 / (w * h)) ** 0.5
        return max(1, round(w * scale)), max(1, round(h * scale))
    return default


def scaled_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """`size` shrunk (never grown) so its longer side is at most `max_side`, ratio kept."""
    width, height = size
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _positive_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _color(prompt: str, seed: int, index: int) -> tuple[int, int, int]:
    digest = hashlib.sha256(f"{prompt}\x00{seed}\x00{index}".encode()).digest()
    return digest[0], digest[1], digest[2]


def render_image(
    prompt: str, seed: int, index: int, width: int, height: int, ext: str = "png"
) -> bytes:
    """Draw one output image and encode it in the format named by `ext` (png, jpg, jpeg, webp)."""
    pil_format = FORMATS[ext][0]
    background = _color(prompt, seed, index)
    image = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(image)
    luminance = 0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2]
    ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
    # the built-in bitmap font needs no font file, so every machine draws the same pixels
    font = ImageFont.load_default_imagefont()
    char_width = max(1, font.getbbox("M")[2])
    columns = max(4, (width - 8) // char_width)
    lines = textwrap.wrap(prompt or "(no prompt)", width=columns)
    lines.append(f"#{index} seed {seed}")
    line_height = max(1, font.getbbox("Mg")[3] + 2)
    max_lines = max(1, (height - 8) // line_height)
    if len(lines) > max_lines:
        # keep the identifying last line visible even when the prompt does not fit
        lines = [*lines[: max_lines - 1], lines[-1]]
    draw.multiline_text((4, 4), "\n".join(lines), fill=ink, font=font, spacing=2)
    buffer = io.BytesIO()
    options: dict[str, Any] = {}
    if pil_format in ("JPEG", "WEBP"):
        options["quality"] = 85
    image.save(buffer, format=pil_format, **options)
    return buffer.getvalue()


class ImageCache:
    """Encoded images by (prediction id, output index); bounded, least recently used out."""

    def __init__(self, max_items: int = 512) -> None:
        self._items: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._max_items = max_items
        self._lock = threading.Lock()

    def get_or_render(self, key: tuple[str, int], render: Callable[[], bytes]) -> bytes:
        with self._lock:
            cached = self._items.get(key)
            if cached is not None:
                self._items.move_to_end(key)
                return cached
        # drawn outside the lock: two racing requests both draw, and get the same bytes
        data = render()
        with self._lock:
            self._items[key] = data
            self._items.move_to_end(key)
            while len(self._items) > self._max_items:
                self._items.popitem(last=False)
        return data

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
