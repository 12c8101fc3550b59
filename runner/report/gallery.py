"""`runner gallery`: one self-contained HTML page showing a campaign's images and problems.

Thumbnails are downscaled copies (Pillow, at most `THUMB_SIZE` pixels a side, JPEG) embedded as
base64 data URIs, so the page opens offline and shows every preview even when copied away
alone; each thumbnail links to its full-size image by a path relative to the page, which works
while the page stays where it was written (by default `gallery.html` in the campaign's output
folder). CSS and JavaScript are inline; a Content-Security-Policy allows nothing else (no
network, no other script: only the page's own, by hash), a second line of defence behind the
escaping of every value taken from the database (prompts are user data).

Failed, moderated, expired, canceled and uncertain jobs appear as cards with their reason;
unfinished ones as cards saying so. The page filters by state (checkboxes) and by prompt text
(every word typed must appear). Jobs are read in batches and the page is written as it goes.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import TextIO
from urllib.parse import quote

from PIL import Image, ImageOps

from runner.report.files import atomic_text
from runner.report.records import iso, prompt_of, runner_version, seed_of
from runner.states import Job, State
from runner.store import Store

PAGE_NAME = "gallery.html"
THUMB_SIZE = 320
BATCH = 64  # jobs whose thumbnails are made together (in threads) before they are written

PROBLEM_STATES = frozenset(
    {State.FAILED, State.MODERATED, State.EXPIRED, State.CANCELED, State.UNCERTAIN}
)

STYLE = """
:root { color-scheme: light; --bg: #f5f5f2; --card: #fff; --ink: #1d1d1f; --muted: #68686d;
  --line: #dfdfdb; --frame: #ebebe7; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--ink);
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif; }
header { position: sticky; top: 0; z-index: 1; background: var(--bg);
  padding: 16px 24px 12px; border-bottom: 1px solid var(--line); }
h1 { font-size: 20px; margin: 0 0 2px; }
.meta { color: var(--muted); margin: 0 0 10px; }
.controls { display: flex; flex-wrap: wrap; gap: 8px 16px; align-items: center; }
.states { display: flex; flex-wrap: wrap; gap: 6px; }
.chip { display: inline-flex; align-items: center; gap: 6px; padding: 3px 10px;
  border: 1px solid var(--line); border-radius: 999px; background: var(--card);
  cursor: pointer; user-select: none; }
.chip input { margin: 0; }
.chip .n { color: var(--muted); }
#search { padding: 6px 10px; min-width: 280px; border: 1px solid var(--line);
  border-radius: 8px; font: inherit; background: var(--card); color: inherit; }
#shown { color: var(--muted); }
main { display: grid; grid-template-columns: repeat(auto-fill, minmax(210px, 1fr)); gap: 16px;
  padding: 20px 24px 40px; }
.card { margin: 0; display: flex; flex-direction: column; overflow: hidden;
  background: var(--card); border: 1px solid var(--line); border-radius: 10px; }
.card[hidden] { display: none; }
.frame { display: flex; align-items: center; justify-content: center; aspect-ratio: 1 / 1;
  background: var(--frame); }
.frame img { display: block; max-width: 100%; max-height: 100%; width: auto; height: auto; }
.problem { flex-direction: column; gap: 10px; padding: 16px; text-align: center; }
.card.s-failed { border-color: #e8b4b4; }
.card.s-moderated { border-color: #ecd29a; }
.card.s-expired, .card.s-canceled, .card.s-uncertain { border-color: #cfc6e6; }
.reason { margin: 0; font-size: 13px; overflow-wrap: anywhere; }
figcaption { padding: 10px 12px 12px; }
.prompt { margin: 0 0 6px; overflow-wrap: anywhere; }
.info { margin: 0; color: var(--muted); font-size: 12px; overflow-wrap: anywhere; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 999px; font-size: 12px;
  font-weight: 600; background: #e4e4e1; color: #3a3a3c; }
.badge.s-done { background: #d9efdc; color: #1d5b26; }
.badge.s-failed { background: #fadcdc; color: #8a1c1c; }
.badge.s-moderated { background: #fbe8c3; color: #744700; }
.badge.s-expired, .badge.s-canceled, .badge.s-uncertain { background: #e7e2f4; color: #4a3b7c; }
#empty { padding: 40px; text-align: center; color: var(--muted); }
"""

SCRIPT = """
(() => {
  "use strict";
  const cards = Array.from(document.querySelectorAll("main .card"));
  const boxes = Array.from(document.querySelectorAll(".states input[type=checkbox]"));
  const search = document.getElementById("search");
  const shown = document.getElementById("shown");
  const empty = document.getElementById("empty");
  for (const box of boxes) {
    const n = cards.filter((card) => card.dataset.state === box.value).length;
    box.parentElement.querySelector(".n").textContent = String(n);
  }
  function apply() {
    const on = new Set(boxes.filter((box) => box.checked).map((box) => box.value));
    const words = search.value.toLowerCase().split(/\\s+/).filter((w) => w !== "");
    let visible = 0;
    for (const card of cards) {
      const prompt = card.dataset.prompt.toLowerCase();
      const show = on.has(card.dataset.state) && words.every((w) => prompt.includes(w));
      card.hidden = !show;
      if (show) visible += 1;
    }
    shown.textContent = visible + " of " + cards.length + " shown";
    empty.hidden = visible !== 0;
  }
  for (const box of boxes) box.addEventListener("change", apply);
  search.addEventListener("input", apply);
  apply();
})();
"""


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


CSP = (
    "default-src 'none'; img-src data:; "
    f"style-src {_csp_hash(STYLE)}; script-src {_csp_hash(SCRIPT)}; "
    "base-uri 'none'; form-action 'none'"
)


@dataclass(frozen=True)
class Thumb:
    uri: str  # a data: URI
    width: int
    height: int


def make_thumbnail(path: Path, size: int = THUMB_SIZE) -> Thumb | None:
    """A JPEG thumbnail of the image at `path` as a data URI; None when it cannot be read."""
    try:
        with Image.open(path) as opened:
            opened.draft("RGB", (size, size))  # JPEG: decode at a reduced scale, much faster
            image = ImageOps.exif_transpose(opened)
            image.thumbnail((size, size))
            if image.mode in ("RGBA", "LA", "P", "PA"):
                rgba = image.convert("RGBA")
                image = Image.new("RGB", rgba.size, (255, 255, 255))
                image.paste(rgba, mask=rgba.getchannel("A"))
            elif image.mode != "RGB":
                image = image.convert("RGB")
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=82, optimize=True)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return Thumb(f"data:image/jpeg;base64,{data}", image.width, image.height)


def relative_href(target: Path, page_dir: Path) -> str:
    """A link from a page in `page_dir` to `target` that cannot be read as another scheme."""
    try:
        rel = os.path.relpath(target, page_dir)
    except ValueError:  # another drive (Windows): no relative path exists
        return target.resolve().as_uri()
    return quote(Path(rel).as_posix())


def _badge(state: str) -> str:
    return f'<span class="badge s-{escape(state)}">{escape(state)}</span>'


def _info(job: Job, extra: str = "") -> str:
    parts = [escape(job.key), escape(job.model)]
    seed = seed_of(job)
    if seed is not None:
        parts.append(f"seed {escape(str(seed))}")
    if extra:
        parts.append(escape(extra))
    return " · ".join(parts)


def _card(job: Job, frame: str, *, extra: str = "") -> str:
    state = job.state.value
    prompt = prompt_of(job)
    return (
        f'<figure class="card s-{escape(state)}" data-state="{escape(state)}" '
        f'data-key="{escape(job.key)}" data-prompt="{escape(prompt)}">'
        f"{frame}<figcaption>"
        f'<p class="prompt" title="{escape(prompt)}">{escape(prompt)}</p>'
        f'<p class="info">{_badge(state)} {_info(job, extra)}</p>'
        "</figcaption></figure>\n"
    )


def _problem(state: str, reason: str) -> str:
    return f'<div class="frame problem">{_badge(state)}<p class="reason">{escape(reason)}</p></div>'


def render_job(
    job: Job, page_dir: Path, thumbnail: Callable[[Path], Thumb | None] = make_thumbnail
) -> str:
    """The card(s) of one job: one per image for a done job, else one saying why not."""
    state = job.state.value
    if job.state in PROBLEM_STATES:
        return _card(job, _problem(state, job.error or "no reason was recorded"))
    if job.state is not State.DONE:
        reason = f"not finished yet ({state})" + (f": {job.error}" if job.error else "")
        return _card(job, _problem(state, reason))
    if not job.files:
        return _card(job, _problem(state, "done, but no file was recorded"))
    cards = []
    for n, file in enumerate(job.files, start=1):
        path = Path(str(file.get("path")))
        extra = f"image {n} of {len(job.files)}" if len(job.files) > 1 else ""
        if not path.is_file():
            frame = _problem("missing", f"file not found: {path.name}")
            cards.append(_card(job, frame, extra=extra))
            continue
        href = escape(relative_href(path, page_dir))
        thumb = thumbnail(path)
        if thumb is None:
            inner = f'<p class="reason">no preview: {escape(path.name)}</p>'
        else:
            inner = (
                f'<img src="{escape(thumb.uri)}" alt="{escape(prompt_of(job))}" '
                f'width="{thumb.width}" height="{thumb.height}">'
            )
        cards.append(_card(job, f'<a class="frame" href="{href}">{inner}</a>', extra=extra))
    return "".join(cards)


def page_head(campaign: str, counts: dict[str, int], generated: float) -> str:
    total = sum(counts.values())
    present = [s.value for s in State if counts.get(s.value)]
    summary = ", ".join(f"{s} {counts[s]}" for s in present) or "no jobs"
    chips = "".join(
        f'<label class="chip"><input type="checkbox" value="{escape(s)}" checked>'
        f'{_badge(s)}<span class="n"></span></label>'
        for s in present
    )
    title = escape(f"{campaign}: gallery")
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{escape(CSP)}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        '<meta name="referrer" content="no-referrer">\n'
        f"<title>{title}</title>\n<style>{STYLE}</style></head>\n<body>\n<header>"
        f"<h1>{escape(campaign)}</h1>"
        f'<p class="meta">{total} job(s): {escape(summary)}'
        f" · generated {escape(iso(generated) or '')} · runner {escape(runner_version())}</p>"
        '<div class="controls">'
        f'<div class="states" role="group" aria-label="Show states">{chips}</div>'
        '<input type="search" id="search" placeholder="Search prompts" '
        'aria-label="Search prompts" autocomplete="off">'
        '<span id="shown" aria-live="polite"></span>'
        "</div></header>\n<main>\n"
    )


PAGE_TAIL = (
    '</main>\n<p id="empty" hidden>No job matches these filters.</p>\n'
    f"<script>{SCRIPT}</script>\n</body></html>\n"
)


def _batches(jobs: Iterable[Job], size: int) -> Iterator[list[Job]]:
    batch: list[Job] = []
    for job in jobs:
        batch.append(job)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def write_page(
    jobs: Iterable[Job],
    out: TextIO,
    *,
    campaign: str,
    counts: dict[str, int],
    page_dir: Path,
    generated: float | None = None,
    thumbnail: Callable[[Path], Thumb | None] = make_thumbnail,
    threads: int = 4,
) -> int:
    """Write the whole page to `out`; return the number of jobs on it."""
    out.write(page_head(campaign, counts, time.time() if generated is None else generated))
    count = 0
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for batch in _batches(jobs, BATCH):
            for html in pool.map(lambda job: render_job(job, page_dir, thumbnail), batch):
                out.write(html)
            count += len(batch)
    out.write(PAGE_TAIL)
    return count


def render_gallery(store: Store, campaign: str, out_dir: Path | None = None) -> tuple[Path, int]:
    """Write the campaign's gallery page atomically; return its path and how many jobs it shows.

    By default the page is `gallery.html` in the campaign's output folder."""
    folder = Path(store.settings(campaign).output_dir) if out_dir is None else out_dir
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / PAGE_NAME
    counts = store.counts(campaign).get(campaign, {})
    with atomic_text(target) as out:
        count = write_page(
            store.jobs(campaign), out, campaign=campaign, counts=counts, page_dir=folder
        )
    return target, count
