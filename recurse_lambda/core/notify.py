"""Failure notices: what the library sends when a chain fails for good (issue 4, item 4).

A chain that ends FAILED is recorded in the ledger first; a :class:`FailureNotifier` then tells someone. The
notice carries what an operator (or a program) needs to act: the chain id, the error, the function and the
ledger table, so that ``recurse-lambda resume CHAIN_ID`` can continue it from its last committed state.

The state itself stays out of the message unless the notifier was built with ``include_state=True``: a notice
goes to a queue, topic or bus that more people can read than the ledger, and the state may hold anything.

A notifier that fails must never mask the chain's failure: the runner calls :func:`send_notice`, which logs
the notifier's error and swallows it. The chain is FAILED in the ledger either way, and ``recurse-lambda list
--status FAILED`` finds it.
"""

from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass
from typing import Any

from ..errors import NotifyError
from .ports import FailureNotifier
from .state_codec import strict_dumps

__all__ = [
    "NOTICE_TYPE",
    "ChainFailureNotice",
    "FailureNotifier",
    "NotifyError",
    "send_notice",
]

NOTICE_TYPE = "recurse-lambda.chain-failed"
NOTICE_VERSION = 1
# An error text longer than this is cut: a notice is a pointer to the ledger, not a log.
MAX_ERROR_CHARS = 4096

log = logging.getLogger("recurse_lambda")


@dataclass(frozen=True, slots=True)
class ChainFailureNotice:
    """A chain failed for good. ``last_state`` is its last committed state (may be None)."""

    chain_id: str
    hop: int | None
    error: str
    function: str | None = None  # the function (ARN) that ran the chain
    last_state: Any = None
    attempts: int | None = None  # claims of the failing hop
    failed_at: float = 0.0  # epoch seconds
    table: str | None = None  # the ledger table, for `recurse-lambda resume`
    resumable: bool = True  # False in stateless mode (no ledger): there is no committed state to resume from

    def resume_command(self) -> str:
        """The CLI command that continues the chain from its last committed state."""
        words = ["recurse-lambda", "resume", self.chain_id]
        if self.table is not None:
            words += ["--table", self.table]
        return shlex.join(words)

    def to_dict(self, *, include_state: bool = False) -> dict[str, Any]:
        """The notice as a JSON-ready mapping; the state only when ``include_state`` is set."""
        error = self.error
        if len(error) > MAX_ERROR_CHARS:
            error = error[: MAX_ERROR_CHARS - 1] + "…"
        body: dict[str, Any] = {
            "type": NOTICE_TYPE,
            "version": NOTICE_VERSION,
            "chain_id": self.chain_id,
            "hop": self.hop,
            "error": error,
            "function": self.function,
            "attempts": self.attempts,
            "failed_at": self.failed_at,
            "table": self.table,
            "resume": self.resume_command() if self.resumable else None,
            "state_included": include_state,
        }
        if include_state:
            body["last_state"] = self.last_state
        return body

    def to_json(self, *, include_state: bool = False, max_bytes: int | None = None) -> str:
        """Compact JSON of :meth:`to_dict`.

        With ``max_bytes``, a state that would make the message larger than the transport accepts is left out
        (``"state_included": false, "state_omitted": "too large"``): the notice must arrive, and the state is
        in the ledger anyway.
        """
        text = _dumps(self.to_dict(include_state=include_state))
        if include_state and max_bytes is not None and len(text) > max_bytes:
            body = self.to_dict(include_state=False)
            body["state_omitted"] = "too large"
            text = _dumps(body)
        return text


def _dumps(body: dict[str, Any]) -> str:
    # default=str: a notice about a failure must not itself fail on an odd value in the state. ASCII only:
    # every transport accepts it, whatever an error message or a state holds (lone surrogates included).
    # RFC 8259: a NaN or infinity (in an old committed state, say) is spelled "NaN", "Infinity", "-Infinity".
    return strict_dumps(body, separators=(",", ":"), default=str)


def send_notice(notifier: FailureNotifier | None, notice: ChainFailureNotice) -> bool:
    """Send ``notice`` through ``notifier``; log and swallow any error. True when it was sent.

    Called by the runner after the ledger recorded FAILED: whatever the notifier does, the invocation still
    returns normally, so Lambda does not retry a poisoned event because a queue was unreachable.
    """
    if notifier is None:
        return False
    try:
        notifier.notify(notice)
    except Exception as exc:  # a broken notifier must not turn a recorded failure into a retry
        log.error(
            "chain %s: the failure notice could not be sent (%s: %s); the chain is FAILED in the ledger",
            notice.chain_id,
            type(exc).__name__,
            exc,
        )
        return False
    return True
