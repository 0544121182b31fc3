"""CURVE security: key files, key derivation, the socket hook and the ZAP authenticator.

Two modes (docs/security.md):

- **Shared secret** (``secret_file``): one secret that every member has. Both a
  server keypair and a client keypair are derived from it; every node serves with
  the server key and connects with the client key, and ZAP admits only that client
  key. Anyone with the secret is a member; nobody else is.
- **Per-node keys** (``keys_dir``): each node has its own keypair and a directory
  of public keys it admits. A caller must know the public key of the node it
  connects to: it travels in addresses (``tcp://host:port#KEY``), in HELLO and in
  discovery records (zeroconf joins the nodes whose key is admitted: :meth:`trusts`).

Keys appear in addresses as 64 hex characters (shell-safe; Z85 has ``$``, ``&``,
``#``); Z85 (40 characters, as in ZeroMQ's own key files) is accepted too.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import zmq
import zmq.auth
from zmq.auth.asyncio import AsyncioAuthenticator
from zmq.utils import z85

from .._errors import ConfigError, ConnectError
from .._util.keys import decode_key, encode_key

__all__ = ["Security", "decode_key", "encode_key", "write_keypair", "write_secret"]

log = logging.getLogger("mesh.security")

#: The name of a node's own key files in a keys directory (ZeroMQ certificate format).
NODE_KEY: Final = "node"
#: The directory of admitted public keys inside a keys directory.
ALLOWED_DIR: Final = "allowed"
_ZAP_DOMAIN: Final = "mesh"
_DERIVE_SERVER: Final = b"zmesh v1 curve server key"
_DERIVE_CLIENT: Final = b"zmesh v1 curve client key"


def write_secret(path: Path, *, force: bool = False) -> Path:
    """Write a new mesh secret (32 random bytes, Z85) readable by the owner only."""
    if path.exists() and not force:
        raise ConfigError(f"{path} exists; refusing to overwrite a secret (use --force)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(z85.encode(secrets.token_bytes(32)).decode() + "\n")
    os.chmod(path, 0o600)
    return path


def write_keypair(keys_dir: Path, *, force: bool = False) -> bytes:
    """Create this node's keypair in ``keys_dir`` (and its ``allowed/`` directory, which
    admits the node's own key). Returns the public key."""
    secret_file = keys_dir / f"{NODE_KEY}.key_secret"
    if secret_file.exists() and not force:
        raise ConfigError(f"{secret_file} exists; refusing to overwrite a key (use --force)")
    (keys_dir / ALLOWED_DIR).mkdir(parents=True, exist_ok=True)
    public_file, secret_path = zmq.auth.create_certificates(keys_dir, NODE_KEY)
    os.chmod(secret_path, 0o600)
    public, _ = zmq.auth.load_certificate(public_file)
    allowed = keys_dir / ALLOWED_DIR / f"{NODE_KEY}.key"
    allowed.write_bytes(Path(public_file).read_bytes())
    return z85.decode(public)


@dataclass(frozen=True, slots=True)
class _Keys:
    server_public: bytes  # z85, what callers put in CURVE_SERVERKEY (shared mode)
    server_secret: bytes
    client_public: bytes
    client_secret: bytes


class Security:
    """One node's CURVE set-up: which keys its sockets use and whom ZAP admits."""

    def __init__(self, *, secret_file: Path | None = None, keys_dir: Path | None = None) -> None:
        if secret_file is not None and keys_dir is not None:
            raise ConfigError("secret_file and keys_dir: choose one security mode, not both")
        if not zmq.has("curve"):
            raise ConfigError("this libzmq has no CURVE support; security cannot be enabled")
        self.mode = "secret" if secret_file is not None else "keys"
        if secret_file is not None:
            self._keys = _derive(_read_secret(secret_file))
            self._allowed_dir: Path | None = None
        elif keys_dir is not None:
            public, secret = _read_keypair(keys_dir)
            self._keys = _Keys(public, secret, public, secret)
            self._allowed_dir = keys_dir / ALLOWED_DIR
            if not self._allowed_dir.is_dir():
                raise ConfigError(f"keys_dir: {self._allowed_dir} is missing (meshctl keygen)")
        else:
            raise ConfigError("security needs secret_file or keys_dir")
        self._allowed: frozenset[bytes] = frozenset()
        self._allowed_stamp: tuple[int, int] | None = None
        self._authenticator: AsyncioAuthenticator | None = None
        #: Handshakes that ZAP refused.
        self.refused = 0

    @property
    def public_key(self) -> bytes:
        """This node's public key as a client (raw 32 bytes): what peers admit."""
        return z85.decode(self._keys.client_public)

    @property
    def server_key(self) -> bytes:
        """The public key callers must expect from this node's sockets (raw 32 bytes)."""
        return z85.decode(self._keys.server_public)

    @property
    def needs_peer_key(self) -> bool:
        """True when a caller must know the peer's key (per-node keys mode)."""
        return self.mode == "keys"

    def start(self, context: zmq.Context[zmq.Socket[bytes]]) -> None:
        """Run a ZAP authenticator for ``context`` on the running loop."""
        authenticator = AsyncioAuthenticator(context, log=log)
        authenticator.start()
        authenticator.configure_curve_callback(_ZAP_DOMAIN, self)
        self._authenticator = authenticator

    def stop(self) -> None:
        if self._authenticator is not None:
            self._authenticator.stop()
            self._authenticator = None

    def callback(self, domain: str, client_key: bytes) -> bool:
        """ZAP: admit ``client_key`` (Z85)? Never CURVE_ALLOW_ANY."""
        if self.mode == "secret":
            allowed = client_key == self._keys.client_public
        else:
            allowed = client_key in self._allowed_keys()
        if not allowed:
            self.refused += 1
            log.warning("refused a CURVE handshake from key %s", client_key.decode()[:12])
        return allowed

    def apply(self, sock: zmq.Socket[bytes], role: str, peer_key: bytes | None) -> None:
        """The socket hook: server role for bound sockets, client role for the others."""
        keys = self._keys
        if role in ("router", "pub"):
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.CURVE_SECRETKEY, keys.server_secret)
            sock.setsockopt(zmq.ZAP_DOMAIN, _ZAP_DOMAIN.encode())
            return
        if self.mode == "secret":
            server = keys.server_public
        elif peer_key is None and role == "sub":
            server = None  # one SUB follows many PUBs: each key is set before its connect
        elif peer_key is None:
            raise ConnectError(
                "per-node keys: the address needs the peer's public key, tcp://host:port#KEY"
            )
        else:
            server = z85.encode(peer_key)
        if server is not None:
            sock.setsockopt(zmq.CURVE_SERVERKEY, server)
        sock.setsockopt(zmq.CURVE_PUBLICKEY, keys.client_public)
        sock.setsockopt(zmq.CURVE_SECRETKEY, keys.client_secret)

    def trusts(self, public_key: bytes) -> bool:
        """Would ZAP admit a node with this client key (raw 32 bytes)? Discovery joins only
        such nodes: with per-node keys, a key in ``allowed/``."""
        key = z85.encode(public_key)
        if self.mode == "secret":
            return key == self._keys.client_public
        return key in self._allowed_keys()

    def _allowed_keys(self) -> frozenset[bytes]:
        """Public keys in ``allowed/``, re-read when the directory changes (rotation)."""
        assert self._allowed_dir is not None
        try:
            info = self._allowed_dir.stat()
        except OSError:
            return frozenset()
        stamp = (info.st_mtime_ns, info.st_ino)
        if stamp != self._allowed_stamp:
            self._allowed = frozenset(
                key for key, ok in zmq.auth.load_certificates(self._allowed_dir).items() if ok
            )
            self._allowed_stamp = stamp
        return self._allowed


def _read_secret(path: Path) -> bytes:
    try:
        text = path.read_text().strip()
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"secret_file: cannot read {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("%s is readable by others: chmod 600 it", path)
    try:
        raw = z85.decode(text.encode()) if len(text) == 40 else bytes.fromhex(text)
    except (ValueError, KeyError, IndexError):
        raw = b""
    if len(raw) != 32:
        raise ConfigError(f"secret_file: {path} does not hold a mesh secret (meshctl keygen)")
    return raw


def _read_keypair(keys_dir: Path) -> tuple[bytes, bytes]:
    secret_file = keys_dir / f"{NODE_KEY}.key_secret"
    try:
        public, secret = zmq.auth.load_certificate(secret_file)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"keys_dir: cannot read {secret_file}: {exc} (meshctl keygen)") from None
    if secret is None:
        raise ConfigError(f"keys_dir: {secret_file} holds no secret key")
    return public, secret


def _derive(secret: bytes) -> _Keys:
    """Server and client keypairs from the mesh secret (SHA-256 with distinct labels)."""
    server_secret = z85.encode(hashlib.sha256(_DERIVE_SERVER + secret).digest())
    client_secret = z85.encode(hashlib.sha256(_DERIVE_CLIENT + secret).digest())
    return _Keys(
        server_public=zmq.curve_public(server_secret),
        server_secret=server_secret,
        client_public=zmq.curve_public(client_secret),
        client_secret=client_secret,
    )
