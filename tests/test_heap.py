"""heap.settle(): what exists when a process has started is left out of the collector's passes."""

from __future__ import annotations

import gc

from hookpipe import heap


def test_settle_leaves_what_exists_out_of_the_collector_s_passes() -> None:
    made_at_start = [{"app": n} for n in range(1000)]
    try:
        heap.settle()
        frozen = gc.get_freeze_count()
        tracked = {id(obj) for obj in gc.get_objects()}
    finally:
        gc.unfreeze()  # the rest of the test run as it was

    assert frozen >= len(made_at_start)
    assert not any(id(obj) in tracked for obj in made_at_start)
    assert id(made_at_start) not in tracked
