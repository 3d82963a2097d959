"""A shard of an object: the ranges holding the records (lines) that begin in ``[start, end)``.

A record begins at ``p`` when ``p == 0`` or byte ``p - 1`` is ``\\n``. A shard aligns itself: it skips to the first
record beginning at or after ``start``, and finishes the record that straddles ``end``. So shards cut anywhere
read every record of the object exactly once between them, and a ``batch.end`` (a record start) is left alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import chain

__all__ = ["ShardRanges"]


class ShardRanges:
    """``(offset, data)`` ranges from :attr:`begin`, cut just after the last record beginning before ``end``.

    ``ranges`` must start at ``start - 1`` (or 0): reading byte ``start - 1`` in the first range tells whether
    ``start`` begins a record without a request of its own. ``0 <= start < end <= size``. The records' start
    is found when the shard is made (reading as far as the line that straddles ``start`` goes); :attr:`stop`,
    the first record start at or after ``end`` (or the size), is known once the ranges are exhausted.
    """

    __slots__ = ("_end", "_first", "_ranges", "begin", "stop")

    def __init__(self, ranges: Iterator[tuple[int, bytes]], start: int, end: int) -> None:
        self._ranges = ranges
        self._end = end
        self._first: tuple[int, bytes] | None = None  # the rest of the range where the records begin
        self.stop: int | None = None
        self.begin = self._align(start)
        if self.begin >= end:  # no record begins in the shard: `begin` is also the first one after it
            self.stop = self.begin

    def _align(self, start: int) -> int:
        if start == 0:
            return 0
        at = start
        for offset, data in self._ranges:
            newline = data.find(b"\n")
            if newline >= 0:
                begin = offset + newline + 1
                if begin < offset + len(data):
                    self._first = (begin, data[newline + 1 :])
                return begin
            at = offset + len(data)
        return at  # no newline from start - 1 on: the only record there began before start

    def __iter__(self) -> Iterator[tuple[int, bytes]]:
        if self.stop is not None:
            return
        last = self._end - 1  # the record holding this byte is the shard's last
        ranges = chain((self._first,), self._ranges) if self._first is not None else self._ranges
        self._first = None
        at = self.begin
        for offset, data in ranges:
            at = offset + len(data)
            if at > last:
                newline = data.find(b"\n", max(last - offset, 0))
                if newline >= 0:
                    # Nothing is pending past this range: the fetcher fetches past `end` only when asked.
                    self.stop = offset + newline + 1
                    yield offset, data if newline + 1 == len(data) else data[: newline + 1]
                    return
            yield offset, data
        self.stop = at
