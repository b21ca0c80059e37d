"""API keys (pure parts): key format, salted hashes, the key file, token buckets, the authenticator."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import pytest

from mlplane.auth import (
    Authenticator,
    AuthSettings,
    DuplicateKeyName,
    InvalidKeyName,
    KeyFileError,
    KeyStore,
    RateLimit,
    RateLimited,
    RateLimiter,
    TokenBucket,
    Unauthenticated,
    UnknownKey,
    credential,
)
from mlplane.auth.keys import MalformedKey, hash_key, new_key, parse_key, verify_key
from mlplane.auth.ratelimit import retry_after


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ------------------------------------------------------------------------------------------ keys
def test_keys_have_a_public_id_and_a_random_secret():
    key_id, key = new_key()
    other_id, other = new_key()
    assert key.startswith(f"mlp_{key_id}_") and len(key) == len("mlp_") + 12 + 1 + 40
    assert parse_key(key) == key_id
    assert key != other and key_id != other_id


@pytest.mark.parametrize("bad", ["", "sk-abc", "mlp_xyz_abc", "mlp_0123456789ab_short",
                                 "Bearer mlp_0123456789ab_" + "a" * 40])
def test_malformed_keys_are_refused_without_echoing_them(bad):
    with pytest.raises(MalformedKey) as err:
        parse_key(bad)
    assert "expected mlp_" in str(err.value)
    assert not bad or bad not in str(err.value)


def test_hashes_are_salted_and_verify_only_the_same_key():
    _, key = new_key()
    _, other = new_key()
    h1, h2 = hash_key(key), hash_key(key)
    assert h1.salt != h2.salt and h1.digest != h2.digest  # a salt per key
    assert verify_key(key, h1) and verify_key(key, h2)
    assert not verify_key(other, h1)
    assert not verify_key(key[:-1] + ("a" if key[-1] != "a" else "b"), h1)


# ------------------------------------------------------------------------------------------ the key file
def test_key_file_holds_hashes_only_with_mode_0600(tmp_path: Path):
    store = KeyStore(tmp_path / "auth" / "keys.json")
    record, key = store.create("alice")
    text = store.path.read_text()
    secret = key.split("_", 2)[2]
    assert secret not in text and key not in text
    assert record.id in text and "scrypt" in text
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert [r.name for r in store.list()] == ["alice"]
    assert "hash" not in record.public() and "salt" not in json.dumps(record.public())


def test_create_refuses_duplicate_and_bad_names(tmp_path: Path):
    store = KeyStore(tmp_path / "keys.json")
    store.create("alice")
    with pytest.raises(DuplicateKeyName, match="'alice' exists already"):
        store.create("alice")
    for bad in ("", "has space", "-dash", "x" * 64, "mlplane-supervisor"):
        with pytest.raises(InvalidKeyName):
            store.create(bad)


def test_revoke_by_id_or_name_and_reuse_of_the_name(tmp_path: Path):
    store = KeyStore(tmp_path / "keys.json")
    alice, _ = store.create("alice")
    bob, _ = store.create("bob", RateLimit(2.0, 3))
    revoked, changed = store.revoke("alice")
    assert changed and revoked.id == alice.id and revoked.revoked
    again, changed = store.revoke(alice.id)
    assert not changed and again.revoked == revoked.revoked
    new_alice, _ = store.create("alice")  # the name of a revoked key is free again
    assert new_alice.id != alice.id
    records = {r.id: r for r in store.list()}
    assert records[alice.id].revoked and records[new_alice.id].active
    assert records[bob.id].rate_limit == RateLimit(2.0, 3)
    with pytest.raises(UnknownKey, match="no key with id or name 'carol'"):
        store.revoke("carol")


def test_system_key_is_replaced_each_time_and_cannot_be_revoked(tmp_path: Path):
    store = KeyStore(tmp_path / "keys.json")
    first = store.issue_system_key()
    second = store.issue_system_key()
    system = [r for r in store.list() if r.system]
    assert len(system) == 1 and parse_key(second) == system[0].id != parse_key(first)
    with pytest.raises(InvalidKeyName, match="supervisor"):
        store.revoke(system[0].id)


def test_a_corrupt_key_file_is_named(tmp_path: Path):
    path = tmp_path / "keys.json"
    path.write_text("{not json")
    with pytest.raises(KeyFileError, match=str(path)):
        KeyStore(path).list()


# ------------------------------------------------------------------------------------------ token buckets
def test_token_bucket_allows_a_burst_then_the_rate():
    bucket = TokenBucket(RateLimit(requests_per_second=2.0, burst=3), now=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)  # one token comes back after 1/2 s
    assert bucket.take(0.25) == pytest.approx(0.25)
    assert bucket.take(0.5) == 0.0
    assert bucket.take(100.0) == 0.0  # refills up to the burst, not beyond
    assert [bucket.take(100.0) for _ in range(3)] == [0.0, 0.0, pytest.approx(0.5)]


def test_rate_limiter_keeps_a_bucket_per_key_and_resets_on_a_new_limit():
    clock = FakeClock()
    limiter = RateLimiter(clock)
    one = RateLimit(1.0, 1)
    assert limiter.take("a", one) == 0.0
    assert limiter.take("a", one) == pytest.approx(1.0)
    assert limiter.take("b", one) == 0.0  # another key, another bucket
    assert limiter.take("a", RateLimit(1.0, 2)) == 0.0  # limit changed: a fresh, full bucket
    clock.now += 1.0
    assert limiter.take("b", one) == 0.0


@pytest.mark.parametrize(("wait", "header"), [(0.01, 1), (1.0, 1), (1.2, 2), (9.99, 10)])
def test_retry_after_rounds_up_to_whole_seconds(wait, header):
    assert retry_after(wait) == header


def test_rate_limits_must_be_positive():
    with pytest.raises(ValueError, match="per second"):
        RateLimit(0, 1)
    with pytest.raises(ValueError, match="burst"):
        RateLimit(1, 0)


# ------------------------------------------------------------------------------------------ authenticator
def test_credential_from_bearer_or_x_api_key():
    assert credential("Bearer abc", None) == "abc"
    assert credential("bearer  abc ", None) == "abc"
    assert credential(None, "xyz") == "xyz"
    assert credential("Basic Zm9vOmJhcg==", "xyz") == "xyz"
    assert credential("Basic Zm9vOmJhcg==", None) is None
    assert credential(None, None) is None


def _authenticator(tmp_path: Path, clock: FakeClock, limit: RateLimit = RateLimit(1.0, 2)) -> Authenticator:
    return Authenticator(AuthSettings(tmp_path / "keys.json", limit), clock=clock)


def test_authenticator_names_each_refusal(tmp_path: Path):
    auth = _authenticator(tmp_path, FakeClock())
    store = KeyStore(tmp_path / "keys.json")
    _, key = store.create("alice")
    run = asyncio.run
    with pytest.raises(Unauthenticated, match="missing API key"):
        run(auth.authenticate(None))
    with pytest.raises(Unauthenticated, match="malformed API key"):
        run(auth.authenticate("sk-not-ours"))
    with pytest.raises(Unauthenticated, match="unknown API key"):
        run(auth.authenticate(new_key()[1]))
    wrong = key[:-4] + ("aaaa" if not key.endswith("aaaa") else "bbbb")
    with pytest.raises(Unauthenticated, match="invalid API key"):
        run(auth.authenticate(wrong))
    with pytest.raises(Unauthenticated, match="invalid API key"):  # remembered: no second scrypt
        run(auth.authenticate(wrong))
    assert run(auth.authenticate(key)).name == "alice"


def test_revocation_applies_to_the_next_request(tmp_path: Path):
    auth = _authenticator(tmp_path, FakeClock(), RateLimit(100.0, 100))
    store = KeyStore(tmp_path / "keys.json")
    _, alice = store.create("alice")
    _, bob = store.create("bob")
    assert asyncio.run(auth.authenticate(alice)).name == "alice"  # verified and cached
    store.revoke("alice")
    with pytest.raises(Unauthenticated, match=r"API key \w+ \(alice\) was revoked"):
        asyncio.run(auth.authenticate(alice))
    assert asyncio.run(auth.authenticate(bob)).name == "bob"


def test_rate_limit_per_key_with_retry_after(tmp_path: Path):
    clock = FakeClock()
    auth = _authenticator(tmp_path, clock, RateLimit(1.0, 2))
    store = KeyStore(tmp_path / "keys.json")
    _, alice = store.create("alice")
    _, fast = store.create("fast", RateLimit(50.0, 5))
    run = asyncio.run
    run(auth.authenticate(alice))
    run(auth.authenticate(alice))
    with pytest.raises(RateLimited) as err:
        run(auth.authenticate(alice))
    assert err.value.retry_after_s == 1 and "1 requests/s, burst 2" in err.value.message
    for _ in range(5):  # its own limit, unaffected by alice
        run(auth.authenticate(fast))
    clock.now += 1.0
    run(auth.authenticate(alice))


def test_system_key_has_no_rate_limit(tmp_path: Path):
    auth = _authenticator(tmp_path, FakeClock(), RateLimit(1.0, 1))
    key = KeyStore(tmp_path / "keys.json").issue_system_key()
    for _ in range(5):
        assert asyncio.run(auth.authenticate(key)).system


def test_a_missing_key_file_means_no_keys_and_a_corrupt_one_keeps_the_last_good(tmp_path: Path):
    auth = _authenticator(tmp_path, FakeClock(), RateLimit(100.0, 100))
    with pytest.raises(Unauthenticated, match="unknown API key"):
        asyncio.run(auth.authenticate(new_key()[1]))
    _, key = KeyStore(tmp_path / "keys.json").create("alice")
    assert asyncio.run(auth.authenticate(key)).name == "alice"
    (tmp_path / "keys.json").write_text("garbage")
    assert asyncio.run(auth.authenticate(key)).name == "alice"
