"""Random ids: unique across pool refills and across a fork. Timed ids: UUIDv7, and their time read back."""

from __future__ import annotations

import os
import random
import uuid

from engine.ids import new_id, time_of, timed_bytes, timed_id


def test_ids_are_32_hex_characters_and_do_not_repeat_across_refills() -> None:
    ids = [new_id() for _ in range(5_000)]  # ~20 reads of the pool
    assert all(len(i) == 32 and set(i) <= set("0123456789abcdef") for i in ids)
    assert len(set(ids)) == len(ids)


def test_a_forked_child_does_not_reuse_the_parents_pool() -> None:
    new_id()  # the parent holds a partly used pool
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next ids, then leave without running the test runner's exit hooks
        os.write(write, "".join(new_id() for _ in range(10)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 1024).decode()
    os.close(read)
    parent = [new_id() for _ in range(10)]
    child_ids = [child[i : i + 32] for i in range(0, len(child), 32)]
    assert len(child_ids) == 10 and not set(child_ids) & set(parent)


def test_timed_ids_are_uuid7_and_give_back_their_time() -> None:
    now_ms = 1_795_000_000_123
    ids = [timed_id(now_ms + i) for i in range(2_000)]
    assert len(set(ids)) == len(ids)
    for i, value in enumerate(ids):
        parsed = uuid.UUID(hex=value)
        assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
        assert time_of(value) == now_ms + i
    assert sorted(ids) == ids  # ids of later milliseconds sort later


def test_only_timed_ids_have_a_time() -> None:
    # Random hex (what new_id gives) has the timed shape, version digit and variant, by chance once in 64.
    rng = random.Random(7)
    randoms = [f"{rng.getrandbits(128):032x}" for _ in range(6_400)]
    shaped = sum(time_of(r) is not None for r in randoms)
    assert 70 <= shaped <= 130  # 100 expected; binomial sd ~10
    for other in (
        "",
        "not-an-id",
        "5F0C4E7D2A9B7C1E8F3A6B2D9C0E1F47",
        "5f0c4e7d2a9b7c1e8f3a6b2d9c0e1f4",
        "5f0c4e7d2a9b7c1ezf3a6b2d9c0e1f47",
    ):
        assert time_of(other) is None
    assert time_of(str(uuid.UUID(int=0x0194_6C1B_2A00_7000_8000_0000_0000_0001)).replace("-", "")) == 0x0194_6C1B_2A00


def _time_by_the_text(id_: str) -> int | None:
    """The rule as written out on the id's text (how time_of read it before it parsed bytes): 32 lowercase hex
    digits, ``7`` at position 12, one of ``89ab`` at 16."""
    if len(id_) != 32 or id_[12] != "7" or id_[16] not in "89ab" or not set(id_) <= set("0123456789abcdef"):
        return None
    return int(id_[:12], 16)


def test_the_byte_parse_takes_exactly_the_ids_the_text_rule_takes() -> None:
    rng = random.Random(20261203)
    ids = [timed_id(rng.randrange(2**48)) for _ in range(300)] + [f"{rng.getrandbits(128):032x}" for _ in range(300)]
    for d in list(ids[:60]):
        for at in (0, 11, 12, 13, 16, 17, 31):
            for c in "0123456789abcdefABCDEF g\u00e9":
                ids.append(d[:at] + c + d[at + 1 :])
        ids += [d.upper(), d[:-1], d + "0", " " + d[1:], d[:30] + " 0", "0x" + d[2:]]
    for d in ids:
        expected = _time_by_the_text(d)
        got = timed_bytes(d)
        assert (got[1] if got else None) == time_of(d) == expected, d
        if got is not None:
            assert got[0] == bytes.fromhex(d)
