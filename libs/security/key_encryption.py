"""Encryption at rest of the private OAuth signing keys, with a key from the environment.

The private half of each signing key is stored sealed with Fernet (``cryptography``:
AES-128-CBC with HMAC-SHA256, authenticated, versioned) under the key encryption key, so a
copy of the database or of a backup signs nothing. The public half is stored in clear: the
reader and every verification use only it, and never need this key.

``SCIM_KEY_ENCRYPTION_KEY`` holds one or more Fernet keys, comma-separated: the first seals,
each opens (to change it: put the new key first, ``scimbus tokens rotate-signing-key``, and
drop the old key once the old signing key is retired, one token lifetime later). Unset, the
key is ``var_dir/key-encryption-key`` when that file exists: the local run creates it (mode
600) at its first start. Compose and Kubernetes set the variable from their secrets; a
front without either cannot make or use a signing key, so ``/oauth/token`` answers 503
and logs why, while every token already issued still verifies.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from libs.config import Settings, read_or_create_secret

KEY_FILE = "key-encryption-key"


class KeyEncryptionError(RuntimeError):
    """A private signing key cannot be sealed or opened: no key encryption key, or another one."""


def new_key() -> str:
    return Fernet.generate_key().decode()


def configured_keys(settings: Settings) -> tuple[str, ...]:
    """The key encryption keys, first the one that seals; () when none is configured."""
    if settings.key_encryption_key:
        return tuple(k.strip() for k in settings.key_encryption_key.split(",") if k.strip())
    path = settings.var_dir / KEY_FILE
    return (path.read_text().strip(),) if path.exists() else ()


def create_local_key(var_dir: Path) -> None:
    """The local run's key: generated once, kept in var_dir (mode 600) like its token."""
    read_or_create_secret(var_dir / KEY_FILE, new_key)


class Sealer:
    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise KeyEncryptionError("no key encryption key: set SCIM_KEY_ENCRYPTION_KEY (a Fernet key; "
                                     "python3 -c 'from cryptography.fernet import Fernet; "
                                     "print(Fernet.generate_key().decode())')")
        self._fernet = MultiFernet([Fernet(k) for k in keys])

    @classmethod
    def from_settings(cls, settings: Settings) -> Sealer:
        return cls(configured_keys(settings))

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise KeyEncryptionError("a signing key was sealed with another key encryption key than "
                                     "SCIM_KEY_ENCRYPTION_KEY holds") from None
