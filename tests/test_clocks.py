"""The simulator's clocks: deadlines that kill, skipped waits, and CPU time that load does not stretch."""

from __future__ import annotations

import time

import pytest

from recurse_lambda.local import CpuClock, InvocationKilled, VirtualClock, WallClock


def test_virtual_time_moves_only_when_advanced_and_a_deadline_kills_at_the_deadline():
    clock = VirtualClock(start=10.0)
    assert clock.now() == 10.0 and clock.time() == clock.epoch + 10.0
    clock.deadline = 12.0
    clock.advance(1.5)
    with pytest.raises(InvocationKilled):
        clock.advance(1.0)
    assert clock.peek() == 12.0  # stopped exactly at the deadline, not past it
    with pytest.raises(InvocationKilled):
        clock.now()
    with pytest.raises(ValueError):
        clock.advance(-1)


def test_wall_clock_skips_waits_but_not_work():
    clock = WallClock()
    t0 = clock.now()
    clock.sleep(120.0)  # Lambda's two-minute retry delay, skipped
    assert 120.0 <= clock.now() - t0 < 121.0
    clock.deadline = clock.now() + 0.01
    time.sleep(0.02)  # real work runs past the deadline...
    with pytest.raises(InvocationKilled):
        clock.now()  # ...and the next look at the clock stops the invocation


def test_cpu_clock_counts_this_threads_cpu_not_idle_time():
    clock = CpuClock()
    t0 = clock.now()
    time.sleep(0.1)  # idle: no CPU spent
    assert clock.now() - t0 < 0.05
    end = time.perf_counter() + 0.1
    while time.perf_counter() < end:  # busy: CPU spent
        pass
    assert clock.now() - t0 > 0.03
    before = clock.now()
    clock.sleep(60.0)
    assert clock.now() - before >= 60.0
