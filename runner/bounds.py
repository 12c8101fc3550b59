"""How much of what a provider says runner takes: whole answers, ids, URLs, output lists and
error texts. Pure: sizes, and text clipped to a size; nothing here reads or raises.

A provider that answers a prediction id of a megabyte, or a 30 MB body, is broken or hostile;
storing what it says whole would fill the database, and a URL built from it cannot be sent.
The adapters check each field against these limits where they parse answers
(`runner.providers.errors` raises the `OVERSIZED` protocol error); the store clips every error
text it writes (`clip`), whoever wrote it.
"""

from __future__ import annotations

# Characters of a prediction id. The real ones are 26 (Replicate) and 36 (BFL); the limit is
# the width of `jobs.remote_id` (String(200)), so that PostgreSQL never refuses one.
MAX_ID = 200
# Characters of one URL: a polling URL, an output URL, a list's `next` link. Signed URLs run
# to a few hundred; 8 KiB is what most servers accept in a request line at all.
MAX_URL = 8 * 1024
# Output URLs of one prediction: models make 1 to 4 (a few up to 10).
MAX_OUTPUTS = 16
# Characters of an error text kept in a job's `error` (and in a log line about it).
MAX_ERROR = 4 * 1024
# Characters of a status word shown in errors and logs ("Pending", "succeeded", ...).
MAX_STATUS = 100
# Bytes of an API answer, read before it is parsed, beyond what it may echo of the request.
MAX_ANSWER = 1024 * 1024
# Bytes of one page of a Replicate-style list: 100 predictions, each echoing its own input.
MAX_LIST_ANSWER = 32 * 1024 * 1024


def answer_limit(echo: int = 0) -> int:
    """Bytes an answer may have when it may carry back `echo` bytes of what was sent (a
    Replicate prediction shows its input): twice that, for JSON escaping ("/" as "\\/")."""
    return MAX_ANSWER + 2 * max(0, echo)


def clip(text: str, limit: int = MAX_ERROR) -> str:
    """`text` cut to at most `limit` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    note = f"... ({len(text):,} characters, cut to {limit:,})"
    return text[: max(0, limit - len(note))] + note


def size_text(count: int) -> str:
    """A size in bytes as a person reads it: "1 MiB", "32 MiB", "8 KiB", "700 bytes"."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:,.3g} {unit}"
    return f"{count:,} bytes"
