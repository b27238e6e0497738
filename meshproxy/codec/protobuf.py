"""The Protocol Buffers wire format, the little of it the SDS client needs (protobuf.dev, "Encoding").

A message is a sequence of fields, each a tag (field number << 3 | wire type) followed by its value: a varint
(type 0), 8 bytes (type 1), a length-delimited byte string (type 2: strings, bytes, embedded messages) or
4 bytes (type 5). Unknown fields are skipped, as every protobuf reader does, so newer Envoy messages with
more fields still decode. No I/O; tests/unit/codec/test_sds_messages.py checks both directions against the
generated classes of Envoy's own .proto files (the xds-protos package).
"""

from __future__ import annotations

from collections.abc import Iterator

VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5
_MAX_VARINT_BYTES = 10


class ProtobufError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def varint(value: int) -> bytes:
    """An unsigned varint: 7 bits per byte, least significant group first, high bit = more follow."""
    if value < 0:
        raise ValueError("varints here are unsigned")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def length_delimited(number: int, value: bytes) -> bytes:
    """Field `number` as a string, bytes or embedded message."""
    return varint(number << 3 | LENGTH_DELIMITED) + varint(len(value)) + value


def string(number: int, text: str) -> bytes:
    """A string field; the empty string is the default and is not written (proto3)."""
    return length_delimited(number, text.encode()) if text else b""


def integer(number: int, value: int) -> bytes:
    """A varint field (int32 / uint32 / int64 with a non-negative value); 0 is the default, not written."""
    return varint(number << 3 | VARINT) + varint(value) if value else b""


def _read_varint(data: bytes, offset: int) -> tuple[int, int]:
    result = shift = 0
    for index in range(offset, min(offset + _MAX_VARINT_BYTES, len(data))):
        byte = data[index]
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, index + 1
        shift += 7
    raise ProtobufError("truncated or overlong varint")


def fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of every field of one message, in order. A length-delimited value
    is the raw bytes (decode it as text or as an embedded message); a fixed-size value is an int."""
    offset, end = 0, len(data)
    while offset < end:
        tag, offset = _read_varint(data, offset)
        number, wire_type = tag >> 3, tag & 7
        if number == 0:
            raise ProtobufError("field number 0")
        if wire_type == VARINT:
            value, offset = _read_varint(data, offset)
            yield number, wire_type, value
        elif wire_type == LENGTH_DELIMITED:
            size, offset = _read_varint(data, offset)
            if offset + size > end:
                raise ProtobufError(f"field {number}: {size} bytes announced, {end - offset} left")
            yield number, wire_type, data[offset : offset + size]
            offset += size
        elif wire_type in (FIXED64, FIXED32):
            size = 8 if wire_type == FIXED64 else 4
            if offset + size > end:
                raise ProtobufError(f"field {number}: truncated fixed-size value")
            yield number, wire_type, int.from_bytes(data[offset : offset + size], "little")
            offset += size
        else:
            raise ProtobufError(f"field {number}: unsupported wire type {wire_type}")


def by_number(data: bytes) -> dict[int, list[bytes]]:
    """The length-delimited fields of one message by field number, every value of a repeated field in order
    (the only kind the SDS messages' interesting fields are); other wire types are skipped."""
    found: dict[int, list[bytes]] = {}
    for number, wire_type, value in fields(data):
        if wire_type == LENGTH_DELIMITED and isinstance(value, bytes):
            found.setdefault(number, []).append(value)
    return found


def text(value: int | bytes) -> str:
    """A length-delimited value as a UTF-8 string."""
    if not isinstance(value, bytes):
        raise ProtobufError("expected a length-delimited field")
    try:
        return value.decode()
    except UnicodeDecodeError as exc:
        raise ProtobufError(f"a string field is not UTF-8: {exc}") from None
