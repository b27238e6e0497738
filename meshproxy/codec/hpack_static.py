"""HPACK encoding without the dynamic table, for the lean HTTP/2 codec (RFC 7541). No I/O.

A field's encoding is then a pure function of the field, so it is memoised; decoding is the hpack library's
(`h2_hpack`).
"""

from __future__ import annotations

from typing import Any

from hpack.table import HeaderTable


def hpack_integer(value: int, prefix_bits: int, first: int) -> bytes:
    """RFC 7541 §5.1 integer with `first` holding the representation's flag bits."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = [first | limit]
    value -= limit
    while value >= 128:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_STATIC_PAIRS: dict[tuple[bytes, bytes], int] = {}
_STATIC_NAMES: dict[bytes, int] = {}
for _index, (_name, _value) in enumerate(HeaderTable.STATIC_TABLE, start=1):
    _STATIC_PAIRS.setdefault((_name, _value), _index)
    _STATIC_NAMES.setdefault(_name, _index)
_FIELD_CACHE_LIMIT = 4096


class StaticEncoder:
    """HPACK encoding that never uses the dynamic table (RFC 7541 §6.2.2 literals without indexing, names
    from the static table where they are there). A field's encoding is then a pure function of the field,
    so it is memoised; the block starts with a table size update to 0 once, so a peer's later
    SETTINGS_HEADER_TABLE_SIZE never needs an answer. Blocks are larger than with indexing and much cheaper
    to make (the hpack library's encoder searches its dynamic table for every field)."""

    __slots__ = ("cache", "header_table_size", "started")

    def __init__(self) -> None:
        self.cache: dict[tuple[bytes, bytes], bytes] = {}
        self.started = False
        self.header_table_size = 4096  # set from the peer's SETTINGS; informational: nothing is indexed

    def encode(self, headers: Any) -> bytes:
        cache = self.cache
        parts = [] if self.started else [b"\x20"]  # dynamic table size update: 0
        self.started = True
        for field in headers:
            encoded = cache.get(field)
            if encoded is None:
                encoded = self._field(field[0], field[1])
                if len(cache) < _FIELD_CACHE_LIMIT:
                    cache[(field[0], field[1])] = encoded
            parts.append(encoded)
        return b"".join(parts)

    @staticmethod
    def _field(name: bytes, value: bytes) -> bytes:
        index = _STATIC_PAIRS.get((name, value))
        if index is not None:
            return hpack_integer(index, 7, 0x80)  # indexed field
        index = _STATIC_NAMES.get(name)
        if index is not None:
            head = hpack_integer(index, 4, 0x00)  # literal without indexing, indexed name
        else:
            head = b"\x00" + hpack_integer(len(name), 7, 0x00) + name
        return head + hpack_integer(len(value), 7, 0x00) + value
