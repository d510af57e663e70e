"""The key-event log: every event chained, countersigned and signed by the right key."""

from __future__ import annotations

import datetime as dt

import pytest

from schakel.contracts.ids import KeyId, OrgId
from schakel.contracts.keyevents import KeyEventRequest, SignedKeyEvent
from schakel.keys.crypto import SigningKey
from schakel.keys.directory import KeyDirectory
from schakel.keys.errors import KeyDirectoryError
from schakel.keys.identity import PartnerIdentity
from schakel.keys.keylog import (
    KeyLog,
    KeyLogError,
    add_encryption_key_request,
    countersign,
    recovery_request,
    register_request,
    revoke_request,
    rotate_signing_key_request,
    sign_request,
)

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
AUTHORITY = SigningKey.generate()


def append(
    log: KeyLog, request: KeyEventRequest, authority: SigningKey = AUTHORITY
) -> SignedKeyEvent:
    signed = countersign(request, index=log.length, prev=log.head, authority=authority)
    log.apply(signed)
    return signed


def registered(*orgs: str) -> tuple[KeyLog, dict[str, PartnerIdentity]]:
    log = KeyLog(AUTHORITY.public)
    ids = {o: PartnerIdentity.generate(OrgId(o), now=T0) for o in orgs}
    for identity in ids.values():
        append(log, sign_request(register_request(identity, T0), identity.signing_key))
    return log, ids


def test_fold_gives_records_of_every_partner() -> None:
    """Registered partners appear in the view with their keys."""
    log, ids = registered("POL.west", "OM.west")
    directory = KeyDirectory()
    directory.load(log)
    assert directory.record(OrgId("POL.west")).signing_key.kid == ids["POL.west"].signing_kid
    assert log.length == 2


def test_encryption_rotation_keeps_old_key_usable_and_switches_senders() -> None:
    """After rotation senders pick the new key; the old one still opens what was sealed to it."""
    log, ids = registered("ZVH.west")
    old = ids["ZVH.west"]
    new = old.with_new_encryption_key(now=T0 + dt.timedelta(days=10))
    append(
        log,
        sign_request(add_encryption_key_request(new, T0 + dt.timedelta(days=10)), new.signing_key),
    )
    directory = KeyDirectory()
    directory.load(log)
    record = directory.record(OrgId("ZVH.west"))
    later = T0 + dt.timedelta(days=11)
    assert record.current_encryption_key(later).kid == new.certificates[-1].kid
    assert directory.encryption_key(OrgId("ZVH.west"), old.certificates[0].kid, later)
    pruned = new.prune_encryption_keys(T0 + dt.timedelta(days=50), dt.timedelta(days=31))
    assert list(pruned.encryption_keys) == [new.certificates[-1].kid]
    kept = new.prune_encryption_keys(T0 + dt.timedelta(days=20), dt.timedelta(days=31))
    assert len(kept.encryption_keys) == 2


def test_signing_rotation_is_cross_signed_and_old_signatures_still_verify() -> None:
    """A new signing key needs the old one's signature; messages from before the switch verify."""
    log, ids = registered("POL.west")
    pol = ids["POL.west"]
    switch = T0 + dt.timedelta(days=5)
    rotated = pol.with_new_signing_key(now=switch)
    new_key = rotated.next_signing_key
    assert new_key is not None
    request = rotate_signing_key_request(rotated, switch)
    with pytest.raises(KeyLogError, match="cross-signed"):
        append(_fresh_copy(log, ids), sign_request(request, new_key))
    append(log, sign_request(request, pol.signing_key))
    directory = KeyDirectory()
    directory.load(log)
    org, old_kid = OrgId("POL.west"), KeyId(pol.signing_kid)
    # The new key is current, its encryption key came along, and the keystore settles on it.
    record = directory.record(org)
    settled = rotated.settled(KeyId(record.signing_key.kid))
    assert settled.signing_key is new_key and settled.next_signing_key is None
    assert record.current_encryption_key(switch).kid == rotated.certificates[-1].kid
    assert rotated.settled(old_kid) is rotated  # not yet in the log: the old key signs
    assert directory.signer(org, old_kid, switch - dt.timedelta(hours=1))
    with pytest.raises(KeyDirectoryError) as info:
        directory.signer(org, old_kid, switch + dt.timedelta(hours=1))
    assert info.value.code == "KEY_EXPIRED"


def test_a_lost_signing_key_is_replaced_by_the_authority_alone() -> None:
    """The organisation lost its keystore: it makes a fresh one; the authority revokes the old
    signing key and installs the fresh keys without a cross-signature. Before the revocation
    the same event is refused (nobody may take over a working organisation this way)."""
    log, ids = registered("POL.west")
    pol = ids["POL.west"]
    fresh = PartnerIdentity.generate(pol.org, now=T0 + dt.timedelta(days=2))
    at = T0 + dt.timedelta(days=3)
    recovery = sign_request(recovery_request(register_request(fresh, at), at), None)
    with pytest.raises(KeyLogError, match="cross-signed"):
        append(_fresh_copy(log, ids), recovery)
    append(log, sign_request(revoke_request(pol.org, KeyId(pol.signing_kid), "lost", at), None))
    append(log, recovery)
    directory = KeyDirectory()
    directory.load(log)
    record = directory.record(pol.org)
    assert record.signing_key.kid == fresh.signing_kid
    assert record.current_encryption_key(at).kid == fresh.certificates[-1].kid


def _fresh_copy(log: KeyLog, ids: dict[str, PartnerIdentity]) -> KeyLog:
    """A fresh log with the same registrations (to try a rejected event without side effects)."""
    fresh, _ = registered()
    for identity in ids.values():
        append(fresh, sign_request(register_request(identity, T0), identity.signing_key))
    return fresh


def test_revocation_applies_from_its_time() -> None:
    """A revoked signing key is refused from the revocation on, even for backdated messages."""
    log, ids = registered("POL.west")
    pol = ids["POL.west"]
    at = T0 + dt.timedelta(days=3)
    append(
        log, sign_request(revoke_request(pol.org, KeyId(pol.signing_kid), "compromised", at), None)
    )
    directory = KeyDirectory()
    directory.load(log)
    before, after = at - dt.timedelta(days=1), at + dt.timedelta(seconds=1)
    assert directory.signer(pol.org, KeyId(pol.signing_kid), before)  # a recipient, old message
    with pytest.raises(KeyDirectoryError) as info:
        directory.signer(pol.org, KeyId(pol.signing_kid), before, now=after)  # the hub, today
    assert info.value.code == "KEY_REVOKED"


def test_revoked_encryption_key_is_gone_for_senders() -> None:
    """After revoking an encryption key, no sender can pick it and the hub rejects it."""
    log, ids = registered("ZVH.west")
    zvh = ids["ZVH.west"]
    kid = zvh.certificates[0].kid
    append(
        log,
        sign_request(
            revoke_request(zvh.org, kid, "compromised", T0 + dt.timedelta(days=1)), zvh.signing_key
        ),
    )
    directory = KeyDirectory()
    directory.load(log)
    assert directory.record(zvh.org).encryption_keys == ()
    with pytest.raises(KeyDirectoryError, match="revoked"):
        directory.encryption_key(zvh.org, kid, T0 + dt.timedelta(days=2))


def test_forged_events_are_rejected_naming_the_index() -> None:
    """Wrong signer, wrong authority, broken chain and replays stop the fold at that event."""
    log, ids = registered("POL.west", "OM.west")
    pol, om = ids["POL.west"], ids["OM.west"]
    evil = pol.with_new_encryption_key(now=T0)
    by_om = sign_request(add_encryption_key_request(evil, T0), om.signing_key)
    with pytest.raises(KeyLogError, match="current signing key") as info:
        append(log, by_om)
    assert info.value.index == 2
    good = sign_request(add_encryption_key_request(evil, T0), pol.signing_key)
    with pytest.raises(KeyLogError, match="authority"):
        append(log, good, authority=SigningKey.generate())
    unchained = countersign(good, index=log.length, prev="f" * 64, authority=AUTHORITY)
    with pytest.raises(KeyLogError, match="broken chain"):
        log.apply(unchained)
    applied = append(log, good)
    with pytest.raises(KeyLogError, match="replayed"):
        log.apply(applied)
    with pytest.raises(KeyLogError, match="already registered"):
        append(log, sign_request(register_request(pol, T0), pol.signing_key))
    stranger = PartnerIdentity.generate(OrgId("KMAR.x"), now=T0)
    without_possession = sign_request(register_request(stranger, T0), SigningKey.generate())
    with pytest.raises(KeyLogError, match="registers"):
        append(log, without_possession)
