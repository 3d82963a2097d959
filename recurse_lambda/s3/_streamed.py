"""One ranged GET run on a fetching thread, its body handed to the reading thread piece by piece as it arrives.

The reader can parse the start of a range while the rest is still on its way (as s3transfer's ordered writes
do), a range in flight holds only the pieces that came, and each piece is freed once the reader is done with
it. Sources that can read a GET's body in pieces offer ``iter_pieces(start, end, piece)`` (``PinnedSource``
does); any other source is read whole, as one piece (``_prefetch.iter_exact_pieces``).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Generator

__all__ = ["StreamedGet"]


class StreamedGet:
    """The pieces of ``[start, end)``: :meth:`run` (on a fetching thread) adds them, :meth:`take` hands them on.

    ``took`` is the GET's time from its start to its last byte, once it is complete. :meth:`cancel` makes
    :meth:`run` stop after the piece it is reading (the body is closed, not drained).
    """

    def __init__(self, start: int, end: int) -> None:
        self.start = start
        self.end = end
        #: The offset of the next piece :meth:`take` returns (the caller's position in the range).
        self.offset = start
        self.took = 0.0
        self._pieces: deque[bytes | memoryview] = deque()
        self._done = False
        self._error: BaseException | None = None
        self._cancelled = False
        self._cond = threading.Condition(threading.Lock())

    def run(self, pieces: Generator[bytes | memoryview, None, None]) -> None:
        """Add the pieces ``pieces`` yields (the GET's, in order), then mark the range complete or failed."""
        began = time.monotonic()
        try:
            for data in pieces:
                with self._cond:
                    if self._cancelled:
                        return
                    self._pieces.append(data)
                    self._cond.notify()
            self.took = time.monotonic() - began
        except BaseException as exc:  # raised in the reading thread, when it gets here
            self._error = exc
        finally:
            pieces.close()  # closes the body of a GET left unfinished
            with self._cond:
                self._done = True
                self._cond.notify()

    def ready(self) -> bool:
        """Whether :meth:`take` would return at once."""
        with self._cond:
            return bool(self._pieces) or self._done

    def wait(self, timeout: float | None) -> bool:
        """Wait until :meth:`take` would return at once, at most ``timeout`` seconds; whether it would."""
        with self._cond:
            return self._cond.wait_for(lambda: bool(self._pieces) or self._done, timeout)

    def take(self) -> bytes | memoryview | None:
        """The next piece (waiting for it), or ``None`` once the range is complete; its failure is raised."""
        with self._cond:
            self._cond.wait_for(lambda: bool(self._pieces) or self._done)
            if self._pieces:
                data = self._pieces.popleft()
                self.offset += len(data)
                return data
            if self._error is not None:
                raise self._error
            return None

    def cancel(self) -> None:
        with self._cond:
            self._cancelled = True
            self._pieces.clear()
