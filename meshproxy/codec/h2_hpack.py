"""HPACK (RFC 7541) as meshproxy's HTTP/2 codecs use it: the hpack library's `Encoder` and `Decoder`, made
cheap for the proxy without changing the `hpack` module that everything else in the process imports.

Hot-path notes: hpack logs every integer and field it codes at debug level (~40 calls for a 10-field block;
~2.5 µs even with logging off) and decodes Huffman strings in pure Python (~18 µs of the ~35 µs it takes to
decode a typical 10-field request block; curl, grpc and nginx Huffman-code every literal). Both the logger
and `decode_huffman` are globals of the `hpack.hpack` module. Instead of patching them for the whole
process, this module runs a private copy of `hpack.hpack` (the same source, importing the same
`hpack.exceptions` and `hpack.table`, so `except HPACKError` still catches its errors) and replaces the
globals of that copy only: only encoders and decoders made from `Encoder` / `Decoder` below are affected.
"""

from __future__ import annotations

import functools
import importlib.util
import types
from typing import TYPE_CHECKING, Any

import hpack
import hpack.huffman_table

# `"".format` is a C function that takes any arguments and does no work: a logger that costs nothing.
# h2 takes the same object as its per-connection `H2Configuration.logger`.
SILENT_LOGGER: Any = types.SimpleNamespace(debug="".format, trace="".format)

# Huffman strings up to this length are memoised (method, paths, user agents, content types, dates repeat);
# longer ones are decoded every time so a peer cannot fill the memo with large strings.
_MEMO_MAX_LENGTH = 256
_MEMO_ENTRIES = 4096

_decode = hpack.huffman_table.decode_huffman
_memoised = functools.lru_cache(maxsize=_MEMO_ENTRIES)(_decode)


def decode_huffman(data: bytes, _memoised: Any = _memoised, _decode: Any = _decode) -> bytes:
    """RFC 7541 §5.2 Huffman decoding; a pure function of the bytes, so short strings are memoised (hpack
    hands it bytes; the defaults bind the functions as locals: this runs once per literal)."""
    result: bytes = _memoised(data) if len(data) <= _MEMO_MAX_LENGTH else _decode(data)
    return result


def _private_hpack() -> types.ModuleType:
    spec = importlib.util.find_spec("hpack.hpack")
    if spec is None or spec.loader is None:  # pragma: no cover - hpack is a dependency
        raise ImportError("hpack.hpack not found")
    module = importlib.util.module_from_spec(spec)  # a new module object, not registered in sys.modules
    spec.loader.exec_module(module)
    vars(module).update(log=SILENT_LOGGER, decode_huffman=decode_huffman)  # this copy's globals only
    return module


if TYPE_CHECKING:  # the same classes, as far as types go
    from hpack import Decoder, Encoder
else:
    _HPACK = _private_hpack()
    Encoder = _HPACK.Encoder
    Decoder = _HPACK.Decoder

__all__ = ["SILENT_LOGGER", "Decoder", "Encoder", "decode_huffman"]
