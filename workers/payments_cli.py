"""`hookpipe payments list / show`: read the payments ledger.

`--json` prints one JSON object per payment (list: one per line). `amount` is a decimal string in
plain notation with the scale the provider sent ("10000.0" stays "10000.0", never "1E+4"), or
null; times are RFC 3339 in UTC.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING, Any

import msgspec

from hookpipe import cli_args, providers
from hookpipe.settings import Settings

if TYPE_CHECKING:
    from hookpipe.workers.ledger import Payment

EXIT_OK = 0
EXIT_FAILED = 1  # the payment does not exist, or the ledger cannot be read

_encode = msgspec.json.Encoder().encode


def configure(parser: argparse.ArgumentParser) -> None:
    """The `list` and `show` subcommands and their options."""
    from hookpipe.workers.ledger import STATUSES

    commands = parser.add_subparsers(dest="action", required=True, metavar="{list,show}")
    listing = commands.add_parser("list", help="payments, the most recently updated first")
    listing.add_argument(
        "--provider", choices=providers.names(), help="only this provider's payments"
    )
    listing.add_argument("--status", choices=STATUSES, help="only payments in this status")
    listing.add_argument("--limit", type=cli_args.positive_int, help="at most this many payments")
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    show = commands.add_parser("show", help="one payment, with its details and events")
    show.add_argument("provider", help="e.g. jodo")
    show.add_argument("payment_id", help="the provider's payment id, e.g. order_12343532424")
    show.add_argument("--json", action="store_true", help="one JSON object")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Print the payments asked for; the exit code."""
    return asyncio.run(_run(args, settings))


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    from hookpipe.workers.errors import WorkerError
    from hookpipe.workers.ledger import Ledger

    try:
        async with await Ledger.open(
            settings.ledger_url, create=False, timeout=settings.ledger_timeout
        ) as ledger:
            if args.action == "show":
                payment = await ledger.get(args.provider, args.payment_id)
                if payment is None:
                    print(
                        f"hookpipe payments: no payment {args.payment_id!r} of provider"
                        f" {args.provider!r} in the ledger",
                        file=sys.stderr,
                    )
                    return EXIT_FAILED
                print(_json(payment) if args.json else _block(payment))
                return EXIT_OK
            payments = await ledger.list(args.provider, args.status, args.limit)
    except WorkerError as exc:
        print(f"hookpipe payments: cannot read the ledger: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        for payment in payments:
            print(_json(payment))
    else:
        print(_table(payments))
    return EXIT_OK


def as_json(payment: Payment) -> dict[str, Any]:
    """A payment as the JSON object `--json` prints."""
    return {
        "provider": payment.provider,
        "payment_id": payment.payment_id,
        "status": payment.status,
        "amount": _amount(payment),
        "currency": payment.currency,
        "events": list(payment.events),
        "version": payment.version,
        "created_at": payment.created_at,
        "updated_at": payment.updated_at,
        "details": dict(payment.details),
    }


def _json(payment: Payment) -> str:
    return _encode(as_json(payment)).decode()


def _amount(payment: Payment) -> str | None:
    return None if payment.amount is None else format(payment.amount, "f")


def _block(payment: Payment) -> str:
    """One payment for a person to read."""
    amount = _amount(payment)
    rows = [
        ("provider", payment.provider),
        ("payment id", payment.payment_id),
        ("status", payment.status),
        ("amount", "-" if amount is None else f"{amount} {payment.currency or ''}".rstrip()),
        ("created at", payment.created_at.isoformat()),
        ("updated at", payment.updated_at.isoformat()),
        ("version", "-" if payment.version is None else str(payment.version)),
        ("events", "\n".join(payment.events) or "-"),
    ]
    details = msgspec.json.format(_encode(dict(payment.details)), indent=2).decode()
    rows.append(("details", details))
    width = max(len(label) for label, _ in rows)
    lines = []
    for label, value in rows:
        first, *rest = value.splitlines() or [""]
        lines.append(f"{label:<{width}}  {first}")
        lines.extend(f"{'':<{width}}  {line}" for line in rest)
    return "\n".join(lines)


def _table(payments: list[Payment]) -> str:
    """Payments as aligned columns, or a line saying there are none."""
    if not payments:
        return "no payments"
    header = ("PROVIDER", "PAYMENT ID", "STATUS", "AMOUNT", "CURRENCY", "EVENTS", "UPDATED")
    rows = [header] + [
        (
            p.provider,
            p.payment_id,
            p.status,
            _amount(p) or "-",
            p.currency or "-",
            str(len(p.events)),
            p.updated_at.isoformat(timespec="seconds"),
        )
        for p in payments
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )
