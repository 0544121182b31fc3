"""CURVE public keys in text, pure: 64 hex characters (ours) or 40 Z85 characters (ZeroMQ's).

Hex is what mesh writes in addresses (``tcp://host:port#KEY``) and listings: it is
safe in shells and URLs, where Z85's ``$``, ``&`` and ``#`` are not.
"""

from __future__ import annotations

from typing import Final

__all__ = ["decode_key", "encode_key", "z85_decode", "z85_encode"]

_Z85: Final = (
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
)
_Z85_INDEX: Final = {c: i for i, c in enumerate(_Z85)}


def z85_encode(data: bytes) -> str:
    """Z85 text of ``data`` (length a multiple of 4), as in ZeroMQ RFC 32."""
    if len(data) % 4:
        raise ValueError("Z85 encodes a multiple of 4 bytes")
    out: list[str] = []
    for i in range(0, len(data), 4):
        value = int.from_bytes(data[i : i + 4], "big")
        chunk = []
        for _ in range(5):
            value, digit = divmod(value, 85)
            chunk.append(_Z85[digit])
        out.extend(reversed(chunk))
    return "".join(out)


def z85_decode(text: str) -> bytes:
    """Bytes of Z85 ``text`` (length a multiple of 5); ValueError on anything else."""
    if len(text) % 5:
        raise ValueError("Z85 text has a multiple of 5 characters")
    out = bytearray()
    for i in range(0, len(text), 5):
        value = 0
        for c in text[i : i + 5]:
            digit = _Z85_INDEX.get(c)
            if digit is None:
                raise ValueError(f"{c!r} is not a Z85 character")
            value = value * 85 + digit
        if value >= 2**32:
            raise ValueError("Z85 group out of range")
        out += value.to_bytes(4, "big")
    return bytes(out)


def encode_key(key: bytes) -> str:
    """A 32-byte public key as mesh writes it: 64 hex characters."""
    return key.hex()


def decode_key(text: str) -> bytes:
    """32 raw key bytes from 64 hex or 40 Z85 characters; ValueError otherwise."""
    try:
        if len(text) == 64:
            return bytes.fromhex(text)
        if len(text) == 40:
            return z85_decode(text)
    except ValueError:
        pass
    raise ValueError(f"not a CURVE public key (64 hex or 40 Z85 characters): {text[:70]!r}")
