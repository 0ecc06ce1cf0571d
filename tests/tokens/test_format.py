from __future__ import annotations

import hashlib
import math
import re

from tokens import format as token_format


def test_it_generates_prefixed_base62_tokens_of_fixed_length() -> None:
    raw = token_format.generate()
    assert re.fullmatch(r"mwt_[0-9A-Za-z]{36}", raw)
    assert len(raw) == token_format.TOKEN_LENGTH == 40


def test_it_carries_at_least_160_bits_of_randomness() -> None:
    assert token_format.RANDOM_LENGTH * math.log2(62) >= 160


def test_it_generates_distinct_tokens() -> None:
    assert len({token_format.generate() for _ in range(2000)}) == 2000


def test_it_accepts_its_own_tokens() -> None:
    for _ in range(200):
        assert token_format.is_well_formed(token_format.generate())


def test_it_rejects_a_wrong_checksum() -> None:
    raw = token_format.generate()
    last = raw[-1]
    tampered = raw[:-1] + ("A" if last != "A" else "B")
    assert not token_format.is_well_formed(tampered)


def test_it_rejects_a_changed_random_part() -> None:
    raw = token_format.generate()
    middle = raw[10]
    tampered = raw[:10] + ("x" if middle != "x" else "y") + raw[11:]
    assert not token_format.is_well_formed(tampered)


def test_it_rejects_malformed_values() -> None:
    raw = token_format.generate()
    for bad in [
        "",
        "mwt_",
        raw[:-1],
        raw + "a",
        "xyz_" + raw[4:],
        raw.replace("mwt_", "MWT_"),
        raw[:20] + "-" + raw[21:],
        raw[:20] + "é" + raw[21:],
        " " + raw[1:],
    ]:
        assert not token_format.is_well_formed(bad), bad


def test_it_computes_the_checksum_as_crc32_in_base62() -> None:
    body = "mwt_" + "0" * 30
    import zlib

    value = zlib.crc32(body.encode())
    decoded = 0
    for char in token_format.checksum(body):
        decoded = decoded * 62 + token_format.ALPHABET.index(char)
    assert decoded == value


def test_it_hashes_with_sha256() -> None:
    raw = token_format.generate()
    assert token_format.hash_token(raw) == hashlib.sha256(raw.encode()).hexdigest()


def test_it_hints_with_prefix_and_last_four() -> None:
    raw = token_format.generate()
    assert token_format.hint_for(raw) == f"mwt_…{raw[-4:]}"
    assert raw[4:-4] not in token_format.hint_for(raw)
