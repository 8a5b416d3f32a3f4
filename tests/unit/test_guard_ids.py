"""Reservation ids name records in shared counter hashes: no two may ever be equal, across threads or forks."""

from __future__ import annotations

import os
import threading

from costplane.enforcers.ids import ReservationIds


def test_ids_are_unique_across_threads() -> None:
    ids = ReservationIds()
    seen: list[list[str]] = [[] for _ in range(8)]

    def draw(out: list[str]) -> None:
        for _ in range(20_000):
            out.append(ids.next())

    threads = [threading.Thread(target=draw, args=(out,)) for out in seen]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for out in seen for i in out]
    assert len(every) == 160_000 and len(set(every)) == len(every)


def test_two_guards_in_one_process_draw_different_prefixes() -> None:
    assert ReservationIds().next() != ReservationIds().next()


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    ids = ReservationIds()
    ids.next()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, through the pipe
        os.close(read)
        with os.fdopen(write, "w") as out:
            out.write("\n".join(ids.next() for _ in range(1000)))
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as inp:
        child = set(inp.read().split("\n"))
    os.waitpid(pid, 0)
    parent = {ids.next() for _ in range(1000)}
    assert len(child) == 1000 and not child & parent
