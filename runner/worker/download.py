"""Fetches a finished image to disk so that a file either exists whole or not at all.

The body streams into a hidden temporary file in the output folder, is checked (length against
Content-Length, an image signature, a size cap), fsynced, and renamed into place atomically;
the folder is fsynced too. The client used here carries no API key: file hosts never see it.
An existing file is never overwritten with other content.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import httpx

from runner.providers.factory import fast_transport

MAX_BYTES = 100 * 1024 * 1024
MAX_REDIRECTS = 3
CHUNK = 64 * 1024

_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "png",
    b"\xff\xd8\xff": "jpg",
    b"GIF87a": "gif",
    b"GIF89a": "gif",
}


def sniff_extension(head: bytes) -> str | None:
    """The image type from the first bytes of a file, or None when it is not an image."""
    for signature, ext in _SIGNATURES.items():
        if head.startswith(signature):
            return ext
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    return None


class DownloadError(Exception):
    def __init__(self, message: str, *, gone: bool = False) -> None:
        super().__init__(message)
        self.gone = gone  # the URL will never serve this file again (expired, removed)


@dataclass(frozen=True)
class SavedFile:
    path: str
    sha256: str
    bytes: int
    url: str

    def to_dict(self) -> dict[str, object]:
        return {"path": self.path, "sha256": self.sha256, "bytes": self.bytes, "url": self.url}


def file_client(timeout: float = 60.0) -> httpx.AsyncClient:
    """An HTTP client for file hosts: no auth headers, a bounded number of redirects."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(timeout),
        follow_redirects=True,
        max_redirects=MAX_REDIRECTS,
        headers={"User-Agent": "runner/0.1"},
        transport=fast_transport(32),
    )


def temp_prefix(tag: str) -> str:
    return f".{tag}."


def sweep_stale_temps(folder: Path, is_dead: Callable[[int], bool]) -> int:
    """Delete temporary files left by downloads of processes that no longer run.

    A temporary file's name carries the pid of its writer (`.<tag>.<pid>.<random>.part`), so a
    live worker's downloads in the same folder are never touched.
    """
    removed = 0
    if not folder.is_dir():
        return 0
    for stale in folder.glob(".*.part"):
        parts = stale.name.split(".")
        if len(parts) >= 4 and parts[-3].isdigit() and is_dead(int(parts[-3])):
            stale.unlink(missing_ok=True)
            removed += 1
    return removed


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _place(temp: Path, folder: Path, name_for: Callable[[str], str], ext: str, digest: str) -> Path:
    """Rename `temp` to its final name; keep an identical existing file, never clobber another."""
    base = name_for(ext)
    stem, dot, suffix = base.rpartition(".")
    if not dot:
        stem, suffix = base, ""
    for attempt in range(1, 1000):
        name = base if attempt == 1 else f"{stem}~{attempt}{dot}{suffix}"
        final = folder / name
        if final.exists():
            if final.is_file() and _sha256(final) == digest:
                temp.unlink()  # a previous run saved this very file before it could record it
                return final
            continue
        try:
            os.link(temp, final)  # fails if the name appeared meanwhile: no silent overwrite
        except FileExistsError:
            continue
        temp.unlink()
        _fsync_dir(folder)
        return final
    raise DownloadError(f"no free file name for {base} in {folder}")


async def download(
    client: httpx.AsyncClient,
    url: str,
    folder: Path,
    name_for: Callable[[str], str],
    tag: str,
    *,
    max_bytes: int = MAX_BYTES,
) -> SavedFile:
    """Download `url` into `folder`; `name_for(ext)` gives the file name once the type is known."""
    if urlsplit(url).scheme not in ("http", "https"):
        raise DownloadError(f"refusing to download {url!r}: only http(s) URLs", gone=True)
    folder.mkdir(parents=True, exist_ok=True)
    temp = folder / f"{temp_prefix(tag)}{os.getpid()}.{os.urandom(4).hex()}.part"
    digest = hashlib.sha256()
    received = 0
    head = b""
    try:
        try:
            async with client.stream("GET", url) as response:
                if response.status_code in (403, 404, 410):
                    raise DownloadError(f"HTTP {response.status_code} for the output", gone=True)
                if response.status_code >= 400:
                    raise DownloadError(f"HTTP {response.status_code} for the output")
                expected = response.headers.get("content-length")
                async with await anyio.open_file(temp, "wb") as fh:
                    async for chunk in response.aiter_raw(CHUNK):
                        received += len(chunk)
                        if received > max_bytes:
                            raise DownloadError(f"output larger than {max_bytes} bytes")
                        if len(head) < 16:
                            head += chunk[: 16 - len(head)]
                        digest.update(chunk)
                        await fh.write(chunk)
                    await fh.flush()
                    await anyio.to_thread.run_sync(os.fsync, fh.wrapped.fileno())
        except httpx.TooManyRedirects:
            raise DownloadError(f"more than {MAX_REDIRECTS} redirects") from None
        except httpx.HTTPError as exc:
            raise DownloadError(f"{type(exc).__name__}: {exc}") from None
        if expected is not None and expected.isdigit() and int(expected) != received:
            raise DownloadError(f"truncated: got {received} of {expected} bytes")
        ext = sniff_extension(head)
        if ext is None:
            raise DownloadError("the output is not an image (unknown file signature)")
        sha = digest.hexdigest()
        final = await anyio.to_thread.run_sync(_place, temp, folder, name_for, ext, sha)
        return SavedFile(path=str(final), sha256=sha, bytes=received, url=url)
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(lambda: temp.unlink(missing_ok=True))


def copy_file(source: Path, folder: Path, name_for: Callable[[str], str], tag: str) -> SavedFile:
    """Copy a file already on disk (a reused result) into `folder`, as atomically as a download."""
    folder.mkdir(parents=True, exist_ok=True)
    data = source.read_bytes()
    ext = sniff_extension(data[:16])
    if ext is None:
        raise DownloadError(f"{source} is not an image any more")
    temp = folder / f"{temp_prefix(tag)}{os.getpid()}.{os.urandom(4).hex()}.part"
    try:
        with temp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        digest = hashlib.sha256(data).hexdigest()
        final = _place(temp, folder, name_for, ext, digest)
        return SavedFile(path=str(final), sha256=digest, bytes=len(data), url=f"file://{source}")
    finally:
        temp.unlink(missing_ok=True)
