"""Envelope benchmark: Schakel's seal / verify / open beside the raw libsodium operations.

Run with ``make bench``. Each Schakel operation is printed beside the sum of the raw libsodium
calls it is built from (measured in the same run, on the same inputs), so the ratio shows
the cost of framing, canonical JSON, pydantic validation and padding, independent of how fast
or noisy this machine is. Each figure is the best of several rounds.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import nacl.bindings as sodium

from schakel.contracts.enums import MessageType
from schakel.contracts.examples import example_body, example_draft
from schakel.contracts.ids import OrgId
from schakel.keys.directory import KeyDirectory
from schakel.keys.envelope import open_envelope, padded_length, seal, verify
from schakel.keys.identity import PartnerIdentity

ROUNDS = 5
TARGET_SECONDS = 0.25


def rate(fn: Callable[[], object]) -> float:
    """Operations per second: best of ROUNDS rounds of about TARGET_SECONDS each."""
    n = 1
    while True:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - start > 0.05:
            break
        n *= 2
    per_round = max(1, int(n * TARGET_SECONDS / max(time.perf_counter() - start, 1e-9)))
    best = 0.0
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(per_round):
            fn()
        best = max(best, per_round / (time.perf_counter() - start))
    return best


def raw_rates(size: int) -> dict[str, float]:
    """Per-second rates of the libsodium primitives for a body of ``size`` bytes."""
    seed = b"\x01" * 32
    pk, sk = sodium.crypto_sign_seed_keypair(seed)
    xpk, xsk = sodium.crypto_box_keypair()
    key, nonce = b"\x02" * 32, b"\x03" * 24
    plain = bytes(padded_length(size + 4))
    header = bytes(700)
    ct = sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plain, header, nonce, key)
    digest = b"\x04" * 64
    sig = sodium.crypto_sign(digest, sk)
    sealed = sodium.crypto_box_seal(key, xpk)
    data = header + ct
    return {
        "sign": rate(lambda: sodium.crypto_sign(digest, sk)),
        "verify": rate(lambda: sodium.crypto_sign_open(sig, pk)),
        "box_seal": rate(lambda: sodium.crypto_box_seal(key, xpk)),
        "box_open": rate(lambda: sodium.crypto_box_seal_open(sealed, xpk, xsk)),
        "aead_enc": rate(
            lambda: sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plain, header, nonce, key)
        ),
        "aead_dec": rate(
            lambda: sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(ct, header, nonce, key)
        ),
        "hash": rate(lambda: sodium.crypto_generichash_blake2b_salt_personal(data, digest_size=64)),
    }


def combined(raw: dict[str, float], parts: dict[str, int]) -> float:
    """Rate of doing each raw operation ``parts[name]`` times in sequence."""
    return 1.0 / sum(count / raw[name] for name, count in parts.items())


def main() -> None:
    """Print the table."""
    sender = PartnerIdentity.generate(OrgId("GEM.westerstad"))
    recipients = [
        PartnerIdentity.generate(OrgId(o))
        for o in ("ZVH.west", "POL.west", "OM.west", "RVDK.noord", "IND.landelijk")
    ]
    directory = KeyDirectory([sender.public_record(), *(r.public_record() for r in recipients)])
    print(f"{'operation':<28}{'schakel/s':>12}{'raw/s':>12}{'ratio':>8}   raw = built from")
    for size in (1024, 64 * 1024):
        body = example_body(MessageType.M7, size=size)
        draft = example_draft(MessageType.M7, body)
        raw = raw_rates(size)
        for n in (1, 5):
            records = [r.public_record() for r in recipients[:n]]
            envelope = seal(body, draft, sender=sender, recipients=records)
            label = f"{size // 1024:>2} KiB, {n} recipient{'s' if n > 1 else ' '}"
            rows = [
                (
                    "seal",
                    lambda: seal(body, draft, sender=sender, recipients=records),  # noqa: B023
                    {"box_seal": n, "aead_enc": 1, "hash": 1, "sign": 1},
                    f"{n} box_seal + aead + hash + sign",
                ),
                (
                    "verify",
                    lambda: verify(envelope, directory.signer),  # noqa: B023
                    {"hash": 1, "verify": 1},
                    "hash + verify",
                ),
                (
                    "open",
                    lambda: open_envelope(envelope, recipients[0], directory.signer),  # noqa: B023
                    {"hash": 1, "verify": 1, "box_open": 1, "aead_dec": 1},
                    "verify + box_open + aead",
                ),
            ]
            for name, fn, parts, what in rows:
                ours = rate(fn)
                base = combined(raw, parts)
                title = f"{name} {label}"
                print(f"{title:<28}{ours:>12,.0f}{base:>12,.0f}{base / ours:>8.2f}   {what}")
        print(
            f"{'  raw ' + str(size // 1024) + ' KiB:':<28}"
            + ", ".join(f"{k} {v:,.0f}/s" for k, v in raw.items())
        )
    print("ratio = raw/schakel: how many times slower than the bare primitives (1.0 = no overhead)")


if __name__ == "__main__":
    main()
