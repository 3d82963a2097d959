"""``recurse-lambda status | list | cancel | resume``: chain control against a real ledger table.

Each command reads the DynamoDB table named by ``--table`` (default ``$RECURSE_LAMBDA_TABLE``), or the ledger
``--ledger MODULE:ATTR`` names (a :class:`Ledger`, or a zero-argument factory of one, imported with the current
directory first on ``sys.path``); ``resume`` also invokes the chain's function, signing the envelope with
``$RECURSE_LAMBDA_SIGNING_KEY`` (the function's key). ``--endpoint-url`` points the AWS clients at a DynamoDB- and
Lambda-compatible endpoint (moto, LocalStack); ``--dynamodb-endpoint-url``, ``--lambda-endpoint-url`` and
``--s3-endpoint-url`` point one service elsewhere (boto3's ``AWS_ENDPOINT_URL_<SERVICE>`` variables do the same
from the environment).
Exit status: 0 done, 1 the chain is unknown or in the wrong state (or AWS failed), 2 a usage error.
The committed state and the original event are printed only with ``--state``: they may hold anything.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from ..config import SIGNING_KEY_ENV, TABLE_ENV
from ..control import ChainControl, parse_status
from ..core.model import ChainRecord, ChainStatus
from ..core.ports import Ledger
from ..core.state_codec import strict_dumps
from ..errors import ConfigurationError, RecurseLambdaError
from .common import UsageError, cwd_first_on_path, resolve_ledger

ENDPOINT_SERVICES = {"dynamodb": "DynamoDB", "lambda": "Lambda", "s3": "S3"}
SUMMARY_CHARS = 200  # a result or error longer than this is cut in human output


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--table", default=None, help=f"the ledger's DynamoDB table (default: ${TABLE_ENV})", metavar="NAME"
    )
    common.add_argument(
        "--ledger",
        default=None,
        metavar="MODULE:ATTR",
        help="another ledger than DynamoDB: an importable Ledger object, or a zero-argument factory returning one "
        "(e.g. sqlite_ledger:from_environment); excludes --table",
    )
    common.add_argument(
        "--endpoint-url",
        default=None,
        metavar="URL",
        help="a DynamoDB- and Lambda-compatible endpoint instead of AWS (e.g. a local moto server)",
    )
    for service, name in ENDPOINT_SERVICES.items():
        common.add_argument(
            f"--{service}-endpoint-url",
            default=None,
            metavar="URL",
            help=f"the {name} endpoint alone (default: --endpoint-url, else $AWS_ENDPOINT_URL_{service.upper()})",
        )
    common.add_argument("--region", default=None, help="AWS region (default: the AWS configuration's)")
    common.add_argument("--json", action="store_true", help="print JSON for scripts instead of text")
    return common


def _status_arg(text: str) -> ChainStatus:
    try:
        return parse_status(text)
    except ConfigurationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"must be zero or more seconds, not {text}")
    return value


def add_parsers(sub: Any) -> None:
    common = _common()
    p = sub.add_parser(
        "status",
        parents=[common],
        help="show one chain: status, hop, attempts, error, result",
        description="Show one chain as the ledger holds it. The state is printed only with --state.",
    )
    p.add_argument("chain_id", metavar="CHAIN_ID")
    p.add_argument(
        "--state", action="store_true", help="also print the committed state and the chain's original event"
    )
    p.set_defaults(command=status_command)

    p = sub.add_parser(
        "list",
        parents=[common],
        help="list chains, most recently updated first",
        description="List chains, most recently updated first (a scan of the table: for operations).",
    )
    p.add_argument(
        "--status",
        type=_status_arg,
        default=None,
        metavar="S",
        help="only chains in this status: " + ", ".join(s.value for s in ChainStatus),
    )
    p.add_argument("--limit", type=_positive_int, default=100, metavar="N", help="at most N chains (100)")
    p.set_defaults(command=list_command)

    p = sub.add_parser(
        "cancel",
        parents=[common],
        help="cancel a RUNNING chain",
        description="Mark a RUNNING chain CANCELLED; its running hop stops at its next checkpoint or hand-off.",
    )
    p.add_argument("chain_id", metavar="CHAIN_ID")
    p.set_defaults(command=cancel_command)

    p = sub.add_parser(
        "resume",
        parents=[common],
        help="continue a FAILED or stalled chain from its last committed state",
        description=(
            "Continue a FAILED chain, or a RUNNING one whose hop stalled, from its last committed state: the "
            "ledger moves to a new hop (so a late delivery of the old one does nothing) and the function the "
            f"chain runs on is invoked with it. Set ${SIGNING_KEY_ENV} to the function's signing key."
        ),
    )
    p.add_argument("chain_id", metavar="CHAIN_ID")
    p.add_argument(
        "--stall-after",
        type=_seconds,
        default=900.0,
        metavar="SECONDS",
        help="a RUNNING chain handed off but unclaimed this long counts as stalled (default 900); 0 to resume "
        "it now, e.g. after a resume whose invoke failed",
    )
    p.set_defaults(command=resume_command)


# ---------------------------------------------------------------------------------------------- wiring


def _client_factory(args: argparse.Namespace) -> Callable[[str], Any]:
    import boto3

    from ..aws.clients import ClientCache, region_from_environment

    region = args.region or region_from_environment() or boto3.session.Session().region_name
    if not region:
        raise UsageError("no AWS region: pass --region or set AWS_REGION")
    endpoints = {s: getattr(args, f"{s}_endpoint_url") or args.endpoint_url for s in ENDPOINT_SERVICES}
    return ClientCache(region=region, endpoints=endpoints)


def _control(args: argparse.Namespace) -> ChainControl:
    ledger: Ledger | None = None
    table: str | None = None
    if args.ledger is not None:
        if args.table is not None:
            raise UsageError("--ledger and --table name two ledgers: pass one")
        with cwd_first_on_path():
            ledger = resolve_ledger(args.ledger)
    else:
        table = args.table or os.environ.get(TABLE_ENV)
        if not table:
            raise UsageError(
                f"no ledger table: pass --table NAME or set {TABLE_ENV} (or --ledger MODULE:ATTR)"
            )
    # AWS is needed for the DynamoDB ledger, and for the Lambda invoke of resume: only then is a region required.
    needs_aws = ledger is None or args.command is resume_command
    factory = _client_factory(args) if needs_aws else None
    clients: dict[str, Any] = {}

    def getter(service: str) -> Callable[[], Any]:
        def get() -> Any:
            if service not in clients:
                if factory is None:  # not reached: only resume makes clients, and it has a factory
                    raise UsageError(f"no AWS client for {service} outside resume")
                clients[service] = factory(service)
            return clients[service]

        return get

    if ledger is None:
        assert table is not None
        from ..aws import DynamoDBLedger

        ledger = DynamoDBLedger(table, client=getter("dynamodb"), s3_client=getter("s3"))
    return ChainControl(ledger, client_factory=lambda service: getter(service)())


def _failed(exc: RecurseLambdaError) -> int:
    print(f"recurse-lambda: {exc}", file=sys.stderr)
    return 1


def _cli_advice(message: str) -> str:
    """The library's messages name the Python argument (``stall_after=0``); a CLI user has the flag."""
    message = message.replace("stall_after=0 (CLI: --stall-after 0)", "--stall-after 0")
    return message.replace("stall_after=0", "--stall-after 0")


# ---------------------------------------------------------------------------------------------- output


def record_json(record: ChainRecord, *, state: bool = False) -> dict[str, Any]:
    """A record for ``--json``: everything but the state and the event, unless ``state``."""
    out: dict[str, Any] = {
        "chain_id": record.chain_id,
        "status": record.status.value,
        "hop": record.hop,
        "attempts": record.attempts,
        "owner": record.owner,
        "lease_until": record.lease_until if record.owner is not None else None,
        "started_at": record.started_at,
        "updated_at": record.updated_at,
        "expires_at": record.expires_at,
        "chunks": _chunks(record),
        "function": record.function,
        "error": record.error,
        "result": record.result,
    }
    if state:
        out["state"] = _state(record)
        out["event"] = record.event
    return out


def _chunks(record: ChainRecord) -> int | None:
    chunks = record.progress.get("chunks") if isinstance(record.progress, dict) else None
    return chunks if isinstance(chunks, int) else None


def _state(record: ChainRecord) -> Any:
    return record.progress.get("state") if isinstance(record.progress, dict) else None


def _when(ts: float, now: float) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))
    ago = now - ts
    if ago < 0:
        return f"{stamp} (in {_span(-ago)})"
    return f"{stamp} ({_span(ago)} ago)"


def _span(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _cut(text: str, limit: int = SUMMARY_CHARS) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _dump(value: Any) -> str:
    return strict_dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def describe(record: ChainRecord, *, state: bool = False, now: float | None = None) -> list[str]:
    """The human view of one chain, a line per field."""
    now = time.time() if now is None else now
    rows: list[tuple[str, str]] = [
        ("chain", record.chain_id),
        ("status", record.status.value),
        ("hop", f"{record.hop} (attempts {record.attempts})"),
    ]
    if record.owner is not None:
        rows.append(("owner", f"{record.owner}, lease until {_when(record.lease_until, now)}"))
    chunks = _chunks(record)
    if chunks is not None:
        rows.append(("chunks", str(chunks)))
    rows += [("started", _when(record.started_at, now)), ("updated", _when(record.updated_at, now))]
    if record.expires_at is not None:
        rows.append(("expires", _when(record.expires_at, now)))
    if record.function:
        rows.append(("function", record.function))
    if record.error:
        rows.append(("error", _cut(record.error)))
    if record.status is ChainStatus.SUCCEEDED:
        rows.append(("result", _cut(_dump(record.result))))
    if state:
        rows += [("state", _dump(_state(record))), ("event", _dump(record.event))]
    return [f"{name:<9} {value}" for name, value in rows]


def _table(records: list[ChainRecord]) -> list[str]:
    header = ("CHAIN ID", "STATUS", "HOP", "ATTEMPTS", "UPDATED", "ERROR")
    rows = [
        (
            r.chain_id,
            r.status.value,
            str(r.hop),
            str(r.attempts),
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(r.updated_at)),
            _cut(r.error or "", 60),
        )
        for r in records
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1]
        for row in [header, *rows]
    ]


# ---------------------------------------------------------------------------------------------- commands


def status_command(args: argparse.Namespace) -> int:
    control = _control(args)
    try:
        record = control.status(args.chain_id)
    except RecurseLambdaError as exc:
        return _failed(exc)
    if args.json:
        print(strict_dumps(record_json(record, state=args.state), ensure_ascii=False, sort_keys=True))
    else:
        print("\n".join(describe(record, state=args.state)))
    return 0


def list_command(args: argparse.Namespace) -> int:
    control = _control(args)
    try:
        records = control.list(status=args.status, limit=args.limit)
    except RecurseLambdaError as exc:
        return _failed(exc)
    if args.json:
        print(strict_dumps([record_json(r) for r in records], ensure_ascii=False, sort_keys=True))
    elif records:
        print("\n".join(line.rstrip() for line in _table(records)))
    else:
        which = f" {args.status.value}" if args.status is not None else ""
        print(f"no{which} chains in the table")
    return 0


def cancel_command(args: argparse.Namespace) -> int:
    control = _control(args)
    try:
        record = control.cancel(args.chain_id)
    except RecurseLambdaError as exc:
        return _failed(exc)
    if args.json:
        print(strict_dumps(record_json(record), ensure_ascii=False, sort_keys=True))
    else:
        print(f"cancelled chain {record.chain_id} at hop {record.hop}; its running hop, if any, stops soon")
    return 0


def resume_command(args: argparse.Namespace) -> int:
    control = _control(args)
    try:
        record = control.resume(args.chain_id, stall_after=args.stall_after)
    except RecurseLambdaError as exc:
        print(f"recurse-lambda: {_cli_advice(str(exc))}", file=sys.stderr)
        return 1
    if not control.signs:  # only once an envelope was actually sent: a refused resume sends nothing
        print(
            f"recurse-lambda: warning: {SIGNING_KEY_ENV} is not set: the envelope was sent unsigned, and a "
            "function configured with a signing key rejects it",
            file=sys.stderr,
        )
    if args.json:
        print(strict_dumps(record_json(record), ensure_ascii=False, sort_keys=True))
    else:
        print(f"resumed chain {record.chain_id} at hop {record.hop}: invoked {record.function}")
    return 0
