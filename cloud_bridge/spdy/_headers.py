"""SPDY/3 header blocks: the name/value layout and its zlib compression.

Invariants (SPDY/3.1 draft, 2.6.10):

* A block is ``count:32`` then ``count`` times ``len:32 name len:32 value``;
  several values of one name travel as one value joined by NUL bytes.
* Names are lower-case, non-empty and appear once per block.
* Blocks are zlib-compressed with the SPDY/3 dictionary (2.6.10.1) and ONE
  compression context per direction for the whole connection. Each block ends
  with a sync flush, so a block decompresses completely on its own, but only
  after every earlier block of that direction went through the same context.
  A block we fail to decompress therefore ends the session: the context is lost.

Strings are latin-1 both ways, so every byte a peer sends maps to one code
point and decoding can never fail.
"""

from __future__ import annotations

import struct
import zlib

_U32 = struct.Struct(">I")


_WORDS = """
    options head post put delete trace accept accept-charset accept-encoding
    accept-language accept-ranges age allow authorization cache-control connection
    content-base content-encoding content-language content-length content-location
    content-md5 content-range content-type date etag expect expires from host
    if-match if-modified-since if-none-match if-range if-unmodified-since
    last-modified location max-forwards pragma proxy-authenticate
    proxy-authorization range referer retry-after server te trailer
    transfer-encoding upgrade user-agent vary via warning www-authenticate method
    get status version HTTP/1.1 url public set-cookie keep-alive origin
"""


def _build_dictionary() -> bytes:
    """The SPDY/3 dictionary (2.6.10.1): length-prefixed words, then a tail.

    Written as data instead of a hex dump so it can be reviewed; the unit tests
    pin its length and SHA-256 to the bytes the Go framer (moby/spdystream) uses.
    """
    # "200 OK" is the one word with a space, so it is spliced in after the split.
    words = _WORDS.split()
    words.insert(words.index("status") + 1, "200 OK")
    tail = (
        "100101201202205206300302303304305306307402405406407408409410411412413414"
        "415416417502504505"
        "203 Non-Authoritative Information"
        "204 No Content"
        "301 Moved Permanently"
        "400 Bad Request"
        "401 Unauthorized"
        "403 Forbidden"
        "404 Not Found"
        "500 Internal Server Error"
        "501 Not Implemented"
        "503 Service Unavailable"
        "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
        "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
        "chunked,text/html,image/png,image/jpg,image/gif,application/xml,"
        "application/xhtml+xml,text/plain,text/javascript,public"
        "privatemax-age=gzip,deflate,sdch"
        "charset=utf-8charset=iso-8859-1,utf-,*,enq=0."
    )
    prefixed = b"".join(_U32.pack(len(w)) + w.encode("ascii") for w in words)
    return prefixed + tail.encode("ascii")


DICTIONARY = _build_dictionary()

Headers = tuple[tuple[str, str], ...]


class HeaderBlockError(Exception):
    """The compressed block or its layout is broken: a session error."""


class HeaderEncodeError(ValueError):
    """Headers we were asked to send cannot be represented."""


def encode_block(headers: list[tuple[str, str]] | Headers) -> bytes:
    """Serialise headers (uncompressed); repeated names are NUL-joined.

    Names are lower-cased here, as the Go framer does, because SPDY requires it.
    """
    merged: dict[str, list[str]] = {}
    for name, value in headers:
        lname = name.lower()
        if not lname:
            raise HeaderEncodeError("empty header name")
        if "\x00" in lname or "\x00" in value:
            raise HeaderEncodeError(f"NUL byte in header {lname!r}")
        merged.setdefault(lname, []).append(value)
    parts = [_U32.pack(len(merged))]
    try:
        for lname, values in merged.items():
            raw_name = lname.encode("latin-1")
            raw_value = "\x00".join(values).encode("latin-1")
            parts += [_U32.pack(len(raw_name)), raw_name, _U32.pack(len(raw_value)), raw_value]
    except UnicodeEncodeError as exc:
        raise HeaderEncodeError(f"header text must be latin-1: {exc}") from None
    return b"".join(parts)


def decode_block(raw: bytes) -> tuple[Headers, str | None]:
    """Parse an uncompressed block into (headers, problem).

    Structural faults raise HeaderBlockError. Naming faults (empty, upper-case
    or repeated names) come back as ``problem``: they are only stream errors,
    since the compression context is still in sync.
    """
    view = memoryview(raw)
    if len(view) < 4:
        raise HeaderBlockError("header block shorter than its count")
    count = _U32.unpack_from(view)[0]
    if count > (len(view) - 4) // 8:  # each pair needs at least two lengths
        raise HeaderBlockError(f"header block announces {count} pairs in {len(view)} bytes")
    pos, out, problem = 4, [], None
    seen: set[str] = set()
    for _ in range(count):
        fields = []
        for _part in ("name", "value"):
            if pos + 4 > len(view):
                raise HeaderBlockError("header block truncated")
            size = _U32.unpack_from(view, pos)[0]
            pos += 4
            if pos + size > len(view):
                raise HeaderBlockError("header block truncated")
            fields.append(bytes(view[pos : pos + size]).decode("latin-1"))
            pos += size
        name, value = fields
        problem = problem or _name_problem(name, seen)
        seen.add(name)
        out += [(name, v) for v in value.split("\x00")]
    if pos != len(view):
        raise HeaderBlockError(f"{len(view) - pos} stray bytes after header block")
    return tuple(out), problem


def _name_problem(name: str, seen: set[str]) -> str | None:
    """Why a header name breaks the rules of 2.6.10, or None."""
    if not name:
        return "empty header name"
    if name != name.lower():
        return f"header name {name!r} is not lower-case"
    if name in seen:
        return f"header {name!r} appears twice"
    return None


class HeaderCompressor:
    """Our direction's zlib context; every block ends with a sync flush."""

    def __init__(self, level: int = zlib.Z_DEFAULT_COMPRESSION) -> None:
        self._z = zlib.compressobj(level, zdict=DICTIONARY)

    def compress(self, headers: list[tuple[str, str]] | Headers, *, limit: int) -> bytes:
        raw = encode_block(headers)
        if len(raw) > limit:  # checked before the context moves on
            raise HeaderEncodeError(f"header block of {len(raw)} bytes exceeds {limit}")
        return self._z.compress(raw) + self._z.flush(zlib.Z_SYNC_FLUSH)


class HeaderDecompressor:
    """The peer's zlib context, with a cap on what one block may expand to."""

    def __init__(self, max_block_size: int) -> None:
        self._z = zlib.decompressobj(zdict=DICTIONARY)
        self._max = max_block_size

    def decompress(self, block: bytes) -> tuple[Headers, str | None]:
        try:
            raw = self._z.decompress(block, self._max + 1)
        except zlib.error as exc:
            raise HeaderBlockError(f"header block does not decompress: {exc}") from None
        if len(raw) > self._max or self._z.unconsumed_tail:
            raise HeaderBlockError(f"header block expands beyond {self._max} bytes")
        if self._z.eof:
            raise HeaderBlockError("peer ended its header compression stream")
        return decode_block(raw)
