"""Random ids: unique across pool refills and across a fork."""

from __future__ import annotations

import os

from engine.ids import new_id


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
