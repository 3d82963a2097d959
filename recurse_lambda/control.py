"""Chain control from Python: status, list, cancel and resume over any :class:`Ledger` (DESIGN §4).

``resume`` moves the chain to a new fencing hop in the ledger first and only then sends that hop's envelope to
the function the chain runs on, so a straggler of the old hop finds itself stale and does nothing. If the send
fails, the ledger already shows the new hop, unowned: ``resume(chain_id, stall_after=0)`` fences it off in turn
and sends again (a delivery that arrives late anyway is then stale too).
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from .config import SIGNING_KEY_ENV, SPILL_BUCKET_ENV, spill_location
from .core.clock import Clock, SystemClock
from .core.codec import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    Envelope,
    EnvelopeCodec,
    SpillStore,
    canonical,
    signing_key_from,
)
from .core.invoke import Invoker
from .core.ledger import ChainRecord, ChainStatus, Ledger
from .errors import (
    ChainStateError,
    ConfigurationError,
    HandOffError,
    LedgerConflict,
    UnknownChainError,
)
from .shards.job import end_job, shard_spec
from .shards.plan import shard_chain_ids

__all__ = ["ChainControl", "ChainStateError", "UnknownChainError"]

ClientFactory = Callable[[str], Any]


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def _shared_client(service: str) -> Any:
    from .aws import clients  # the AWS layer, imported at the first client: ChainControl imports no boto3

    return clients.client(service)


def _holds_writer(value: Any) -> bool:
    """Whether a dumped state holds an output writer's state (``{"kind": "s3-writer", ...}``) anywhere."""
    if isinstance(value, Mapping):
        return value.get("kind") == "s3-writer" or any(_holds_writer(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_holds_writer(v) for v in value)
    return False


def code_version_of(function: str) -> str:
    """The published version a qualified function ARN names, or ``$LATEST`` (what the runner records)."""
    parts = function.split(":")
    qualifier = parts[7] if len(parts) == 8 and parts[5] == "function" else ""
    return qualifier if qualifier.isdigit() else "$LATEST"


class ChainControl:
    """Look at and steer chains recorded in ``ledger``.

    ``invoker`` sends a resumed hop (default: Lambda, through a client made on first use by
    ``client_factory``, by default the process's clients of :mod:`recurse_lambda.aws.clients`); ``environ``
    supplies the signing key (``RECURSE_LAMBDA_SIGNING_KEY``, which must be the function's) and, when ``spill``
    is not given, the spill bucket and prefix (``RECURSE_LAMBDA_SPILL_BUCKET``, ``RECURSE_LAMBDA_SPILL_PREFIX``).
    """

    def __init__(
        self,
        ledger: Ledger,
        *,
        invoker: Invoker | None = None,
        clock: Clock | None = None,
        environ: Mapping[str, str] | None = None,
        spill: SpillStore | None = None,
        client_factory: ClientFactory | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> None:
        self.ledger = ledger
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.environ: Mapping[str, str] = environ if environ is not None else os.environ
        self._client_factory = client_factory or _shared_client
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        if invoker is None:
            from .aws import LambdaInvoker  # the AWS layer; boto3 itself is imported at the first client

            invoker = LambdaInvoker(lambda: self._client("lambda"))
        self.invoker = invoker
        bucket, prefix = spill_location(self.environ)
        if spill is None and bucket:
            from .aws import S3SpillStore

            spill = S3SpillStore(lambda: self._client("s3"), bucket, prefix)
        self.spill = spill
        self.codec = EnvelopeCodec(
            signing_key=signing_key_from(self.environ, SIGNING_KEY_ENV),
            spill=spill,
            max_payload_bytes=max_payload_bytes,
        )

    @property
    def signs(self) -> bool:
        """Whether resumed envelopes are signed (the function rejects unsigned ones if it has a key)."""
        return self.codec.signing_key is not None

    def _client(self, service: str) -> Any:
        with self._lock:
            if service not in self._clients:
                self._clients[service] = self._client_factory(service)
            return self._clients[service]

    # ------------------------------------------------------------------ reading

    def status(self, chain_id: str) -> ChainRecord:
        """The chain's record; :class:`UnknownChainError` when there is none."""
        record = self.ledger.get(chain_id)
        if record is None:
            raise UnknownChainError(chain_id)
        return record

    def list(self, status: ChainStatus | str | None = None, limit: int = 100) -> builtins.list[ChainRecord]:
        """Chains, most recently updated first; only those with ``status`` when given."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigurationError(f"limit must be a positive integer, not {limit!r}")
        return self.ledger.list(status=parse_status(status) if status is not None else None, limit=limit)

    # ------------------------------------------------------------------ steering

    def cancel(self, chain_id: str, *, abort_uploads: bool = True) -> ChainRecord:
        """Mark a RUNNING chain CANCELLED; its next claim, checkpoint or hand-off sees it and stops.

        Cancelling a sharded job cancels its running shards too. Cancelling one shard cancels its job (the job's
        error names the shard), and so the job's other running shards: the job cannot complete without it.
        With ``abort_uploads`` (the default), the open uploads of the outputs (``run.s3.writer``) in the
        committed state of every chain cancelled are aborted and their spilled tails deleted (S3 is called only
        when a state holds a writer); a hop still running meets the aborted upload and stops.
        """
        try:
            record = self.ledger.cancel(chain_id, now=self.clock.time())
        except LedgerConflict as conflict:
            current = self._current(chain_id, conflict)
            raise ChainStateError(
                f"cannot cancel chain {chain_id}: it is {current.status}; only a RUNNING chain can be cancelled",
                current,
            ) from conflict
        job: ChainRecord | None = record
        spec = shard_spec(record.event)
        if spec is not None:
            job = end_job(self.ledger, spec, chain_id, ChainStatus.CANCELLED, None, self.clock.time())
        cancelled = [record]
        for shard in self._shards(job) if job is not None else []:
            if shard.status is ChainStatus.RUNNING:
                with contextlib.suppress(LedgerConflict):  # it ended meanwhile
                    cancelled.append(self.ledger.cancel(shard.chain_id, now=self.clock.time()))
        if abort_uploads:
            for ended in cancelled:
                self._abort_uploads(ended)
        return record

    def _abort_uploads(self, record: ChainRecord) -> None:
        state = record.progress.get("state") if isinstance(record.progress, Mapping) else None
        if not _holds_writer(state):
            return
        from .s3 import abort_upload  # the s3 layer, only for a state that holds an output

        try:
            abort_upload(state, self._client("s3"))
        except Exception as exc:  # the chain is cancelled whatever S3 answers
            logging.getLogger("recurse_lambda").warning(
                "chain %s is cancelled, but its output's upload could not be aborted (%s: %s); the bucket's "
                "lifecycle rule (AbortIncompleteMultipartUpload) removes it",
                record.chain_id,
                type(exc).__name__,
                exc,
            )

    def _shards(self, job: ChainRecord) -> builtins.list[ChainRecord]:
        """The shard chains of a sharded job (none for another chain, or a job not yet split)."""
        plan = job.progress.get("shards") if isinstance(job.progress, Mapping) else None
        if not isinstance(plan, Mapping) or "count" not in plan:
            return []
        found = (self.ledger.get(chain_id) for chain_id in shard_chain_ids(job.chain_id, plan))
        return [r for r in found if r is not None]

    def resume(self, chain_id: str, stall_after: float = 900.0) -> ChainRecord:
        """Continue a FAILED chain, or a RUNNING one whose hop stalled, from its last committed state.

        A RUNNING chain counts as stalled when its hop is held by a lease that has expired, or when it has been
        handed off but left unclaimed for ``stall_after`` seconds. Returns the record at its new hop.
        """
        if stall_after < 0:
            raise ConfigurationError(f"stall_after must be zero or more seconds, not {stall_after!r}")
        before = self.status(chain_id)
        shards = self._shards(before)
        cancelled = [s for s in shards if s.status is ChainStatus.CANCELLED]
        if cancelled and before.status is not ChainStatus.CANCELLED:
            raise ChainStateError(
                f"cannot resume job {chain_id}: its shard {cancelled[0].chain_id} was cancelled, and a cancelled "
                "chain is not resumed, so the job cannot complete",
                before,
            )
        # A sharded job failed because a shard did: resume its failed shards too. The job, at its new hop,
        # then waits for them (and re-sends any shard that never started), and their last join wakes it.
        failed = [s.chain_id for s in shards if s.status is ChainStatus.FAILED]
        self._check_resumable(before)
        if before.status is ChainStatus.FAILED:
            # The shards first: a late report of a shard's old failure then finds the job still FAILED, rather
            # than failing it again after its resume (a shard that ends before the job resumes is joined then).
            for shard_id in failed:
                self._resume_one(shard_id, stall_after)
            return self._resume_one(chain_id, stall_after)
        record = self._resume_one(chain_id, stall_after)
        for shard_id in failed:
            self._resume_one(shard_id, stall_after)
        return record

    def _check_resumable(self, before: ChainRecord) -> str:
        """The function that runs the chain; refuses, before the ledger is touched, what cannot be sent."""
        chain_id = before.chain_id
        if not before.function:
            raise ConfigurationError(
                f"cannot resume chain {chain_id}: the ledger does not record which function runs it (it was "
                "started by a version of recurse-lambda that did not record it); start it again instead"
            )
        if self.codec.spill is None:
            self._fits(before)  # too large to send without a spill store: say so before touching the ledger
        return before.function

    def _resume_one(self, chain_id: str, stall_after: float) -> ChainRecord:
        recorded = self._check_resumable(self.status(chain_id))
        try:
            record = self.ledger.resume(chain_id, now=self.clock.time(), stall_after=stall_after)
        except LedgerConflict as conflict:
            current = self._current(chain_id, conflict)
            raise ChainStateError(self._why_not_resumable(current, stall_after), current) from conflict
        function = record.function or recorded
        try:
            payload = self.codec.encode(Envelope.from_record(record, code_version=code_version_of(function)))
            self.invoker.invoke_async(function, payload)
        except (HandOffError, ConfigurationError) as exc:
            raise HandOffError(
                f"chain {chain_id} was moved to hop {record.hop} in the ledger, but its envelope could not be "
                f"sent to {function}: {exc}; once the cause is fixed, resume it again with stall_after=0 (CLI: "
                "--stall-after 0)"
            ) from exc
        return record

    # ------------------------------------------------------------------ helpers

    def _current(self, chain_id: str, conflict: LedgerConflict) -> ChainRecord:
        current = conflict.current if conflict.current is not None else self.ledger.get(chain_id)
        if current is None:
            raise UnknownChainError(chain_id) from conflict
        return current

    def _fits(self, record: ChainRecord) -> None:
        size = len(canonical({"progress": record.progress, "event": record.event}))
        if size > self.codec.max_payload_bytes:
            raise ConfigurationError(
                f"cannot resume chain {record.chain_id}: its state and event take {size} bytes, over the "
                f"{self.codec.max_payload_bytes}-byte invoke limit, and no spill bucket is configured: set "
                f"{SPILL_BUCKET_ENV} to the function's spill bucket"
            )

    def _why_not_resumable(self, current: ChainRecord, stall_after: float) -> str:
        head = f"cannot resume chain {current.chain_id}: it is {current.status}"
        if current.status is ChainStatus.CANCELLED and current.error:
            head += f" ({current.error})"  # a sharded job cancelled with its shard names the shard
        if current.status is not ChainStatus.RUNNING:
            return f"{head}; only a FAILED chain, or a RUNNING one that stalled, can be resumed"
        now = self.clock.time()
        if current.owner is not None:
            return (
                f"{head} at hop {current.hop}, held by request {current.owner} until {_when(current.lease_until)} "
                f"({current.lease_until - now:.0f} s from now); resume it once that lease has expired, if the "
                "hop has not moved on by then"
            )
        idle = now - current.updated_at
        return (
            f"{head}: hop {current.hop} was handed off {idle:.0f} s ago and may still start; a chain counts as "
            f"stalled after {stall_after:.0f} s unclaimed (pass stall_after=0 if you know the hand-off was lost)"
        )


def parse_status(value: ChainStatus | str) -> ChainStatus:
    """``"failed"`` or ``ChainStatus.FAILED`` → ``ChainStatus.FAILED``; a clear error for anything else."""
    if isinstance(value, ChainStatus):
        return value
    try:
        return ChainStatus(str(value).strip().upper())
    except ValueError:
        names = ", ".join(s.value for s in ChainStatus)
        raise ConfigurationError(f"unknown chain status {value!r}: expected one of {names}") from None
