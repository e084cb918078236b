"""Watermark keys: loading, generating, and deriving keyed random streams with HMAC-SHA256.

A key is 32 secret bytes. Every keyed choice of the watermark (which cells are pilot cells,
their chip signs, the data-cell interleaver) comes from its own numpy ``Generator`` seeded with
``HMAC-SHA256(secret, label)``, so the streams are independent of one another and of the audio.

Key resolution order (``load_key``): an explicit key file, then ``$V2A_WATERMARK_KEY`` (hex),
then ``$V2A_WATERMARK_KEY_FILE``, then the **public demo key**. The demo key is printed in this
file: anyone can verify *and forge* marks made with it, so it only shows that marking works.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

KEY_BYTES = 32
ENV_KEY = "V2A_WATERMARK_KEY"
ENV_KEY_FILE = "V2A_WATERMARK_KEY_FILE"
# Public and NOT secret: a fixed, documented key so that marking works out of the box.
DEMO_SECRET = hashlib.sha256(b"v2a-export PUBLIC DEMO watermark key - not secret").digest()


@dataclass(frozen=True)
class WatermarkKey:
    """A watermark key. ``secret`` never appears in ``repr``."""

    secret: bytes = field(repr=False)
    key_id: str  # short public fingerprint, safe to log and to store beside outputs
    is_demo: bool = False

    @classmethod
    def from_secret(cls, secret: bytes, *, is_demo: bool = False) -> WatermarkKey:
        if len(secret) != KEY_BYTES:
            raise ValueError(f"watermark key must be {KEY_BYTES} bytes, got {len(secret)}")
        fingerprint = hmac.new(secret, b"v2a-wm/key-id", hashlib.sha256).hexdigest()[:12]
        return cls(secret=bytes(secret), key_id=("demo-" if is_demo else "") + fingerprint,
                   is_demo=is_demo)

    @classmethod
    def from_hex(cls, text: str) -> WatermarkKey:
        cleaned = "".join(text.split())
        try:
            secret = bytes.fromhex(cleaned)
        except ValueError as e:
            raise ValueError(
                f"watermark key must be {2 * KEY_BYTES} hex digits, got {len(cleaned)} "
                "characters that are not all hex") from e
        if len(secret) != KEY_BYTES:
            raise ValueError(f"watermark key must be {2 * KEY_BYTES} hex digits, "
                             f"got {len(cleaned)}")
        return cls.from_secret(secret)


def demo_key() -> WatermarkKey:
    """The public demo key (``is_demo=True``): offers no protection at all."""
    return WatermarkKey.from_secret(DEMO_SECRET, is_demo=True)


def read_key_file(path: str | os.PathLike) -> WatermarkKey:
    """Read a key file: 64 hex digits; blank lines and lines starting with ``#`` are ignored."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read watermark key file {path}: {e}") from e
    body = "".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("#"))
    try:
        return WatermarkKey.from_hex(body)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from e


def load_key(key_file: str | os.PathLike | None = None) -> WatermarkKey:
    """Resolve the operator's key: ``key_file`` → ``$V2A_WATERMARK_KEY`` (hex) →
    ``$V2A_WATERMARK_KEY_FILE`` → the public demo key (``is_demo=True``)."""
    if key_file is not None:
        return read_key_file(key_file)
    env_hex = os.environ.get(ENV_KEY, "").strip()
    if env_hex:
        try:
            return WatermarkKey.from_hex(env_hex)
        except ValueError as e:
            raise ValueError(f"${ENV_KEY}: {e}") from e
    env_file = os.environ.get(ENV_KEY_FILE, "").strip()
    if env_file:
        return read_key_file(env_file)
    return demo_key()


def generate_key_file(path: str | os.PathLike) -> WatermarkKey:
    """Write a fresh random key (mode 0600) to ``path``, which must not exist yet."""
    key = WatermarkKey.from_secret(secrets.token_bytes(KEY_BYTES))
    text = f"# v2a watermark key {key.key_id}; keep secret\n{key.secret.hex()}\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as e:
        raise ValueError(f"refusing to overwrite existing key file {path}") from e
    except OSError as e:
        folder = os.path.dirname(os.path.abspath(path))
        why = "does not exist" if not os.path.isdir(folder) else (e.strerror or "cannot write")
        raise ValueError(f"{path}: cannot create the key file (directory {folder!r}: {why})") from e
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return key


def keyed_rng(secret: bytes, label: str) -> np.random.Generator:
    """An independent random stream for ``label``: seeded by HMAC-SHA256(secret, label)."""
    digest = hmac.new(secret, b"v2a-wm/" + label.encode(), hashlib.sha256).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest, "little")))
