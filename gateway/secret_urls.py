"""Upstream URLs that carry secrets: what may be shown of them, and scrubbing them out of text.

Hosted MCP servers often put the key in the URL itself: a path segment
(``https://actions.example.com/mcp/sk-ak-4f9Qx/sse``, ``https://mcp.example.net/<uuid>/github``) or the query
(``?api_key=...&token=...``). The full URL is stored encrypted (``Server.url_encrypted``) and used only to
connect; everything that presents a server shows ``display_url``: scheme, host and port as they are, every
path segment that looks like it could be a secret replaced by ``MASK``, every query value replaced by
``MASK`` (keys stay, unless a key itself looks secret), and a fragment shown as ``#••••``.

What counts as secret-looking (when unsure, mask): a path segment is shown as it is only when

- it is empty (``//`` or a trailing ``/``), or a version label (``v1``, ``v2.1``, ``v3beta``); or
- it is made of lowercase ASCII words joined by single ``-``, ``_`` or ``.`` (``mcp``, ``github-issues``,
  ``server.v``, ``messages``), at most 32 characters in all, and every word
  - has at most 16 letters,
  - is not 8 or more letters of only ``a``-``f`` (hex),
  - has a vowel (``aeiouy``) when it has 5 letters or more, and no run of 5 consonants.

Everything else is masked: digits (ids, UUIDs, dates), uppercase letters (``sk-ABC``, base64), percent
escapes, ``@``, ``~``, ``+``, ``=``, ``;``, and long or vowel-less words. The one kind of secret this cannot
tell from a word is a short run of lowercase letters that reads like one (``/banana-split/``): put such a
secret in the credential field (a header), which is never shown.
"""

from __future__ import annotations

import logging
import re
import threading
from urllib.parse import unquote, unquote_plus, urlsplit

MASK = "••••"
_WORDS = re.compile(r"[a-z]+(?:[-_.][a-z]+)*")
_VERSION = re.compile(r"v\d{1,2}(?:\.\d{1,2})?(?:alpha|beta)?")
_HEX_WORD = re.compile(r"[a-f]{8,}")
_CONSONANT_RUN = re.compile(r"[bcdfghjklmnpqrstvwxz]{5}")
_VOWELS = frozenset("aeiouy")
SEGMENT_MAX = 32
WORD_MAX = 16
# In free text (``scrub``, the log filter) a hidden piece is replaced on its own only when it is at least this
# long and secret-looking itself: a query value such as ``json``, ``true`` or ``http`` would otherwise garble
# every message. Such pieces are still masked in ``display_url`` and wherever the whole URL appears.
SCRUB_MIN = 6
DEFAULT_PORTS = {"http": 80, "https": 443}


def looks_secret(part: str) -> bool:
    """Whether a path segment or query key (percent-decoded) could be a secret: see the module docstring."""
    if not part or _VERSION.fullmatch(part):
        return False
    if len(part) > SEGMENT_MAX or not _WORDS.fullmatch(part):
        return True
    for word in re.split(r"[-_.]", part):
        if len(word) > WORD_MAX or _HEX_WORD.fullmatch(word) or _CONSONANT_RUN.search(word):
            return True
        if len(word) >= 5 and not _VOWELS & set(word):
            return True
    return False


def origin(url: str) -> str:
    """``scheme://host[:port]`` of ``url``, lowercased, the port only when it is not the scheme's default."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        port = None
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}" + ("" if port in (None, DEFAULT_PORTS.get(scheme)) else f":{port}")


def _path(path: str) -> tuple[str, list[str]]:
    shown: list[str] = []
    hidden: list[str] = []
    for segment in path.split("/"):
        if looks_secret(unquote(segment)) or unquote(segment) != segment:
            shown.append(MASK)
            hidden.append(segment)
        else:
            shown.append(segment)
    return "/".join(shown), hidden


def _query(query: str) -> tuple[str, list[str]]:
    shown: list[str] = []
    hidden: list[str] = []
    for parameter in query.split("&"):
        if not parameter:
            shown.append(parameter)
            continue
        key, equals, value = parameter.partition("=")
        if not equals:  # a bare ``?sk-abc``: a value without a key
            shown.append(MASK)
            hidden.append(parameter)
            continue
        if looks_secret(unquote_plus(key)):
            hidden.append(key)
            key = MASK
        if value:
            hidden.append(value)
        shown.append(f"{key}={MASK if value else ''}")
    return "&".join(shown), hidden


def _split(url: str) -> tuple[str, list[str]]:
    parts = urlsplit(url)
    path, hidden = _path(parts.path)
    shown = origin(url) + path
    if parts.query:
        query, more = _query(parts.query)
        shown += f"?{query}"
        hidden += more
    if parts.fragment:
        shown += f"#{MASK}"
        hidden.append(parts.fragment)
    return shown, hidden


def display_url(url: str) -> str:
    """What people see of an upstream URL, e.g. ``https://mcp.example.com/••••/mcp?api_key=••••``."""
    return _split(url)[0]


def secret_parts(url: str) -> list[str]:
    """The pieces of ``url`` that ``scrub`` replaces in free text, raw and percent-decoded, longest first:
    what ``display_url`` hides, when ``SCRUB_MIN`` characters or longer and secret-looking."""
    hidden = _split(url)[1]
    pieces = {piece for raw in hidden for piece in (raw, unquote(raw), unquote_plus(raw))}
    return sorted((p for p in pieces if len(p) >= SCRUB_MIN and _reads_secret(p)), key=len, reverse=True)


def _reads_secret(piece: str) -> bool:
    """A hidden piece is secret-looking in free text when one of its runs between punctuation is: a query
    value such as ``tools/list`` or ``json,sse`` is plain words, and replacing it would garble messages."""
    return any(looks_secret(run) for run in re.split(r"[^A-Za-z0-9._-]+", piece))


def scrub(text: str, url: str) -> str:
    """``text`` (an error message, a log line) with ``url`` shown as ``display_url`` and every secret piece
    of it (``secret_parts``) replaced by ``MASK``, wherever it appears."""
    if not text or not url:
        return text
    text = text.replace(url, display_url(url))
    for piece in secret_parts(url):
        if piece in text:
            text = text.replace(piece, MASK)
    return text


# -- a last line of defence for the log --------------------------------------------------------------------
# Messages are scrubbed where they are made (catalog, services); an exception nobody expected (its traceback
# may quote a URL) is caught here. Every URL the process decrypts registers its hidden pieces; the filter on
# the log handler replaces them in each record it writes. Bounded: the oldest URLs are forgotten first.
REMEMBERED_MAX = 2000
_remembered: dict[str, list[str]] = {}
_pattern: re.Pattern[str] | None = None
_lock = threading.Lock()


def remember(url: str) -> None:
    """Let ``ScrubSecretUrls`` hide the secret pieces of ``url`` from the log of this process."""
    global _pattern
    if url in _remembered:
        return
    pieces = secret_parts(url)
    if not pieces:
        return  # nothing to hide: the filter stays free for processes whose URLs hold no secret
    with _lock:
        _remembered[url] = pieces
        while len(_remembered) > REMEMBERED_MAX:
            del _remembered[next(iter(_remembered))]
        _pattern = None


def _current_pattern() -> re.Pattern[str]:
    global _pattern
    with _lock:
        if _pattern is None:
            pieces = sorted({p for ps in _remembered.values() for p in ps}, key=len, reverse=True)
            _pattern = re.compile("|".join(map(re.escape, pieces))) if pieces else re.compile(r"(?!)")
        return _pattern


class ScrubSecretUrls(logging.Filter):
    """On a log handler: the message, traceback and stack of each record with remembered secret pieces of
    upstream URLs replaced by ``MASK``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _remembered:
            return True
        pattern = _current_pattern()
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the handler's to report: never raise from a filter
            return True
        cleaned = pattern.sub(MASK, message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = pattern.sub(MASK, record.exc_text)
        if record.stack_info:
            record.stack_info = pattern.sub(MASK, record.stack_info)
        return True
