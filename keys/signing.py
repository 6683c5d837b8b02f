"""Ed25519 signing keys: generation, files (mode 0600), raw public keys."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from keys import KeyFileError

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64


@dataclass(frozen=True)
class SigningKey:
    """A participant's Ed25519 private key. Only its own node holds it."""

    private: Ed25519PrivateKey

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        """A deterministic key from a 32-byte seed (test keys, golden files)."""
        if len(seed) != 32:
            raise KeyFileError(f"an Ed25519 seed is 32 bytes, got {len(seed)}")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        data = read_private(path)
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as e:
            raise KeyFileError(f"key file {path} is not a PEM private key") from e
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"key file {path} is not an Ed25519 key")
        return cls(key)

    def private_pem(self) -> bytes:
        """The key as unencrypted PKCS#8 PEM, what `load` reads."""
        return self.private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def save(self, path: Path) -> None:
        """Write as PKCS#8 PEM with mode 0600 (created so, never widened)."""
        pem = self.private_pem()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, pem)
        finally:
            os.close(fd)
        os.chmod(path, 0o600)

    def sign(self, message: bytes) -> bytes:
        return self.private.sign(message)

    def seed(self) -> bytes:
        """The 32-byte seed `from_seed` takes: for handing the key over a pipe
        to this node's own signing process (node/signproc.py), never to a file."""
        return self.private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    @property
    def public_bytes(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )


def read_private(path: Path) -> bytes:
    """The bytes of a private key file (signing, TLS, admin, CA key).

    Raises KeyFileError when it cannot be read or when its mode lets anyone
    but its owner read or write it: a key others could read is not secret.
    """
    try:
        mode = path.stat().st_mode & 0o777
        data = path.read_bytes()
    except OSError as e:
        raise KeyFileError(f"cannot read key file {path}: {e.strerror}") from e
    if mode & 0o077:
        raise KeyFileError(
            f"key file {path} is readable by others (mode {mode:o}); chmod 600 it"
        )
    return data


def write_private(path: Path, data: bytes) -> None:
    """Create a key file with mode 0600 from the start; refuses to overwrite one."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as e:
        raise KeyFileError(f"{path} exists; a key file is never overwritten") from e
    except OSError as e:
        raise KeyFileError(f"cannot create key file {path}: {e.strerror}") from e
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.chmod(path, 0o600)


@functools.lru_cache(maxsize=1024)
def _public_key(raw: bytes) -> Ed25519PublicKey:
    """The key object of 32 raw bytes, built once per key: every note and
    cosignature a node checks is by one of its few peers' keys."""
    return Ed25519PublicKey.from_public_bytes(raw)


def verify_ed25519(public_key: bytes, signature: bytes, message: bytes) -> bool:
    """True when `signature` is a valid Ed25519 signature of `message`.

    A bool here because callers in `ledger` raise their own typed error.
    """
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    try:
        _public_key(bytes(public_key)).verify(signature, message)
    except InvalidSignature:
        return False
    return True
