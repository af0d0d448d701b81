"""SPDY/3's header-compression dictionary (draft 3, section 2.6.10.1), as data.

The spec lists it as bytes; it is a run of length-prefixed words (4-byte big-endian
length, then the word) followed by a plain tail. zlib's FDICT id for it is 0xE3C6A7C2,
the bytes every SPDY/3 peer's first header block carries after ``38 ea``.
"""

from __future__ import annotations

__all__ = ["DICTIONARY", "DICTIONARY_ID"]

_WORDS = (
    "options head post put delete trace accept accept-charset accept-encoding accept-language "
    "accept-ranges age allow authorization cache-control connection content-base content-encoding "
    "content-language content-length content-location content-md5 content-range content-type date "
    "etag expect expires from host if-match if-modified-since if-none-match if-range "
    "if-unmodified-since last-modified location max-forwards pragma proxy-authenticate "
    "proxy-authorization range referer retry-after server te trailer transfer-encoding upgrade "
    "user-agent vary via warning www-authenticate method get status"
).split() + ["200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin"]

_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request"
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented"
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 "
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,"
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age="
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)

DICTIONARY: bytes = b"".join(len(w).to_bytes(4, "big") + w.encode("ascii") for w in _WORDS) + _TAIL.encode("ascii")
DICTIONARY_ID = 0xE3C6A7C2
