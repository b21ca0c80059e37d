"""API keys: their format, salted hashes, and the key file (``.mlplane/auth/keys.json``).

A key reads ``mlp_<id>_<secret>``: the 12-hex-digit id is public (it names the key in lists and
logs), the 40-character secret comes from :mod:`secrets` and is shown once, at creation. The file
keeps, per key, an scrypt hash of the whole key with a salt of its own, never the key itself. It is
written atomically (temporary file, ``fsync``, rename) with mode 0600, under an exclusive lock, so
running servers that re-read it on change see either the old or the new version, whole.
"""

from __future__ import annotations

import base64
import builtins  # KeyStore.list shadows the type in the class body
import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import string
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlplane.auth.ratelimit import RateLimit

__all__ = [
    "SYSTEM_KEY_NAME",
    "DuplicateKeyName",
    "InvalidKeyName",
    "KeyFileError",
    "KeyRecord",
    "KeyStore",
    "KeyStoreError",
    "MalformedKey",
    "UnknownKey",
    "hash_key",
    "keys_document",
    "new_key",
    "parse_key",
    "read_keys",
    "verify_key",
]

KEY_PREFIX = "mlp"
SYSTEM_KEY_NAME = "mlplane-supervisor"  # the supervisor's own key, for version switches; replaced by every `up`
_KEY_RE = re.compile(r"^mlp_([0-9a-f]{12})_([0-9A-Za-z]{40})$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_ALPHABET = string.ascii_letters + string.digits
# scrypt at 16 MiB and ~50 ms per check; servers cache a verified key in memory, so a key pays it once.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
_FILE_KIND = "ApiKeys"


class KeyStoreError(ValueError):
    """A key operation the user asked for cannot be done; the message says why."""


class DuplicateKeyName(KeyStoreError):
    pass


class InvalidKeyName(KeyStoreError):
    pass


class UnknownKey(KeyStoreError):
    pass


class KeyFileError(KeyStoreError):
    """The key file exists but cannot be read as one."""


class MalformedKey(ValueError):
    """A presented key that is not ``mlp_<id>_<secret>``."""


# --------------------------------------------------------------------------------------------- keys
def new_key() -> tuple[str, str]:
    """A fresh ``(key id, key)``."""
    key_id = secrets.token_hex(6)
    secret = "".join(secrets.choice(_ALPHABET) for _ in range(40))
    return key_id, f"{KEY_PREFIX}_{key_id}_{secret}"


def parse_key(key: str) -> str:
    """The id of a well-formed key; :class:`MalformedKey` otherwise (the message never echoes the key)."""
    match = _KEY_RE.match(key)
    if match is None:
        raise MalformedKey("malformed API key: expected mlp_<12 hex digits>_<40 letters or digits>")
    return match.group(1)


@dataclass(frozen=True)
class KeyHash:
    """scrypt of the whole key with a per-key salt, and the parameters used."""

    salt: bytes
    digest: bytes
    n: int = _SCRYPT["n"]
    r: int = _SCRYPT["r"]
    p: int = _SCRYPT["p"]

    def to_dict(self) -> dict[str, Any]:
        return {"algorithm": "scrypt", "n": self.n, "r": self.r, "p": self.p,
                "salt": base64.b64encode(self.salt).decode(), "digest": base64.b64encode(self.digest).decode()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KeyHash:
        if data.get("algorithm") != "scrypt":
            raise ValueError(f"unsupported hash algorithm {data.get('algorithm')!r}")
        return cls(base64.b64decode(data["salt"]), base64.b64decode(data["digest"]),
                   int(data["n"]), int(data["r"]), int(data["p"]))


def _scrypt(key: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(key.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=32)


def hash_key(key: str) -> KeyHash:
    salt = secrets.token_bytes(16)
    return KeyHash(salt, _scrypt(key, salt, **_SCRYPT))


def verify_key(key: str, stored: KeyHash) -> bool:
    """Whether ``key`` hashes to ``stored`` (constant-time comparison)."""
    return hmac.compare_digest(_scrypt(key, stored.salt, stored.n, stored.r, stored.p), stored.digest)


# --------------------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class KeyRecord:
    """One key as stored: everything but the key itself."""

    id: str
    name: str
    created: str
    hash: KeyHash
    revoked: str | None = None
    rate_limit: RateLimit | None = None  # None: the platform's spec.auth.rateLimit
    system: bool = False  # the supervisor's key: no rate limit

    @property
    def active(self) -> bool:
        return self.revoked is None

    def public(self) -> dict[str, Any]:
        """What ``mlplane keys list`` shows: no hash, no salt."""
        limit = self.rate_limit
        return {
            "id": self.id,
            "name": self.name,
            "created": self.created,
            "revoked": self.revoked,
            "rateLimit": {"requestsPerSecond": limit.requests_per_second, "burst": limit.burst} if limit else None,
            "system": self.system,
        }

    def to_dict(self) -> dict[str, Any]:
        data = self.public()
        data["hash"] = self.hash.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KeyRecord:
        limit = data.get("rateLimit")
        return cls(
            id=str(data["id"]),
            name=str(data["name"]),
            created=str(data["created"]),
            hash=KeyHash.from_dict(data["hash"]),
            revoked=data.get("revoked"),
            rate_limit=RateLimit(float(limit["requestsPerSecond"]), int(limit["burst"])) if limit else None,
            system=bool(data.get("system", False)),
        )


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def keys_document(records: list[KeyRecord]) -> dict[str, Any]:
    """The key file's content for ``records`` (hashes, no keys)."""
    return {"kind": _FILE_KIND, "keys": [r.to_dict() for r in records]}


def read_keys(path: Path) -> list[KeyRecord]:
    """The records in the key file at ``path``; none when it does not exist."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    try:
        doc = json.loads(text)
        if doc.get("kind") != _FILE_KIND:
            raise ValueError(f"kind is {doc.get('kind')!r}, expected {_FILE_KIND!r}")
        return [KeyRecord.from_dict(k) for k in doc["keys"]]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise KeyFileError(f"{path}: not a valid key file ({exc}); restore it or move it away") from None


# --------------------------------------------------------------------------------------------- the file
class KeyStore:
    """Creates, lists and revokes the keys in one key file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def list(self) -> list[KeyRecord]:
        return read_keys(self.path)

    def create(self, name: str, rate_limit: RateLimit | None = None) -> tuple[KeyRecord, str]:
        """A new key named ``name``; returns its record and the key, which is stored nowhere."""
        if not _NAME_RE.match(name):
            raise InvalidKeyName(f"key name {name!r}: use 1-63 letters, digits, '.', '_' or '-', "
                                 "starting with a letter or digit")
        if name == SYSTEM_KEY_NAME:
            raise InvalidKeyName(f"key name {name!r} is reserved for the platform's supervisor")
        with self._locked() as records:
            if any(r.name == name and r.active for r in records):
                raise DuplicateKeyName(f"a key named {name!r} exists already; pick another name "
                                       f"or revoke it first (mlplane keys revoke {name})")
            record, key = self._new_record(name, rate_limit, system=False)
            records.append(record)
        return record, key

    def revoke(self, id_or_name: str) -> tuple[KeyRecord, bool]:
        """Revoke the key with this id (or the active key with this name); ``(record, whether it changed)``."""
        with self._locked() as records:
            index = self._find(records, id_or_name)
            record = records[index]
            if record.system:
                raise InvalidKeyName(f"key {record.id} is the supervisor's; `mlplane up` replaces it")
            if not record.active:
                return record, False
            records[index] = replace(record, revoked=_now())
            return records[index], True

    def issue_system_key(self) -> str:
        """A new supervisor key replacing the previous one (deleted, not revoked); returns the key."""
        with self._locked() as records:
            records[:] = [r for r in records if not r.system]
            record, key = self._new_record(SYSTEM_KEY_NAME, None, system=True)
            records.append(record)
        return key

    @staticmethod
    def _new_record(name: str, rate_limit: RateLimit | None, system: bool) -> tuple[KeyRecord, str]:
        key_id, key = new_key()
        return KeyRecord(key_id, name, _now(), hash_key(key), rate_limit=rate_limit, system=system), key

    @staticmethod
    def _find(records: builtins.list[KeyRecord], id_or_name: str) -> int:
        by_id = [i for i, r in enumerate(records) if r.id == id_or_name]
        by_name = [i for i, r in enumerate(records) if r.name == id_or_name]
        active = [i for i in by_name if records[i].active]
        for found in (by_id, active, by_name[-1:]):
            if found:
                return found[0]
        known = ", ".join(f"{r.id} ({r.name})" for r in records if not r.system) or "none"
        raise UnknownKey(f"no key with id or name {id_or_name!r}; known keys: {known}")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[builtins.list[KeyRecord]]:
        """Read the records under an exclusive lock; write them back if the block ends normally."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            records = read_keys(self.path)
            yield records
            self._write(records)
        finally:
            os.close(fd)

    def _write(self, records: builtins.list[KeyRecord]) -> None:
        doc = keys_document(records)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".keys-", suffix=".tmp")  # mode 0600
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(doc, f, indent=2)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
