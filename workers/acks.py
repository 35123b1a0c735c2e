"""Acks of a channel's deliveries, sent together where they can be.

A basic.ack with multiple=True acks every unacked delivery tag of the channel up to its own. It
is sent only where every tag up to it is settled or to be acked: never over a delivery whose
handler is still running, or that is to be requeued. Other acks go singly. Acks decided in the
same turn of the event loop (the handlers of one ledger batch, resumed by its commit) go out
together at the end of it.
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass

import structlog
from aio_pika.abc import AbstractIncomingMessage

log = structlog.get_logger()


class _State(enum.Enum):
    IN_FLIGHT = "in flight"
    TO_ACK = "to ack"
    SETTLED = "settled"  # acked, or requeued: the broker has heard of it already


@dataclass(frozen=True, slots=True)
class Ack:
    """One basic.ack to send, and the delivery tags it settles."""

    tag: int
    multiple: bool
    covers: tuple[int, ...]


class AckTracker:
    """The bookkeeping of one channel's delivery tags; no I/O, so that it can be tested alone.

    Tags are numbered 1, 2, ... per channel, in the order of delivery; every tag received must
    be `received()` before another's ack is taken.
    """

    def __init__(self) -> None:
        self._floor = 0  # every tag up to it is settled
        self._tags: dict[int, _State] = {}

    def received(self, tag: int) -> None:
        self._tags[tag] = _State.IN_FLIGHT

    def to_ack(self, tag: int) -> None:
        """The delivery is finished and to be acked by the next `take()`."""
        self._tags[tag] = _State.TO_ACK

    def settled(self, tag: int) -> None:
        """The delivery was settled otherwise (requeued): its frame is sent already."""
        if tag in self._tags:
            self._tags[tag] = _State.SETTLED

    def in_flight(self, tag: int) -> bool:
        """Whether the delivery is neither to be acked nor settled: it may still be requeued."""
        return self._tags.get(tag) is _State.IN_FLIGHT

    def take(self) -> list[Ack]:
        """The acks to send now, in this order; their tags count as settled from here on."""
        acks = []
        # The run of finished tags from the floor up: one ack, multiple, up to its last to ack.
        # A tag not received yet (a gap) ends the run as one still in flight does.
        tag, covers = self._floor + 1, []
        while (state := self._tags.get(tag)) is not None and state is not _State.IN_FLIGHT:
            if state is _State.TO_ACK:
                covers.append(tag)
            tag += 1
        if covers:
            acks.append(Ack(covers[-1], len(covers) > 1, tuple(covers)))
        for settled in range(self._floor + 1, tag):
            del self._tags[settled]
        self._floor = tag - 1
        # Behind a tag still in flight: one by one.
        for later, state in self._tags.items():
            if state is _State.TO_ACK:
                acks.append(Ack(later, False, (later,)))
                self._tags[later] = _State.SETTLED
        return acks


class ChannelAcks:
    """Acks of one channel's deliveries: `ack()` returns once the ack is sent."""

    def __init__(self) -> None:
        self._tracker = AckTracker()
        self._messages: dict[int, AbstractIncomingMessage] = {}
        self._waiters: dict[int, asyncio.Future[None]] = {}
        self._flush_at_end_of_turn = False
        # One sender at a time, in order: an ack multiple must not overtake a single ack of a
        # tag it covers (the broker would close the channel on the second, unknown, tag).
        self._sending = asyncio.Lock()
        self._senders: set[asyncio.Task[None]] = set()

    def received(self, message: AbstractIncomingMessage) -> None:
        tag = _tag(message)
        self._tracker.received(tag)
        self._messages[tag] = message

    def in_flight(self, message: AbstractIncomingMessage) -> bool:
        """Whether the message may still be requeued: its ack was not decided."""
        return self._tracker.in_flight(_tag(message))

    def requeued(self, message: AbstractIncomingMessage) -> None:
        """The message was nacked (its frame sent): later acks may cover its tag."""
        tag = _tag(message)
        self._tracker.settled(tag)
        self._messages.pop(tag, None)

    async def ack(self, message: AbstractIncomingMessage) -> None:
        """Ack the message with others decided in this turn of the event loop; return once
        sent (or failed: the broker then redelivers, and the ledger knows the event)."""
        tag = _tag(message)
        self._tracker.to_ack(tag)
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[tag] = waiter
        if not self._flush_at_end_of_turn:
            self._flush_at_end_of_turn = True
            asyncio.get_running_loop().call_soon(self._flush)
        # Shielded: a handler cancelled now still has its ack sent, by the flush.
        await asyncio.shield(waiter)

    async def drain(self) -> None:
        """Wait for the acks decided so far to be sent."""
        if self._flush_at_end_of_turn:
            self._flush()
        while self._senders:
            await asyncio.gather(*self._senders, return_exceptions=True)

    def _flush(self) -> None:
        if not self._flush_at_end_of_turn:
            return
        self._flush_at_end_of_turn = False
        acks = self._tracker.take()
        if acks:
            task = asyncio.create_task(self._send(acks))
            self._senders.add(task)
            task.add_done_callback(self._senders.discard)

    async def _send(self, acks: list[Ack]) -> None:
        async with self._sending:
            for ack in acks:
                message = self._messages[ack.tag]
                try:
                    await message.ack(multiple=ack.multiple)
                except Exception as exc:
                    # The channel is gone: the broker requeues the messages, and the ledger's
                    # record of processed events makes their second run change nothing.
                    log.warning(
                        "ack failed; the broker will redeliver",
                        error_type=type(exc).__name__,
                        messages=len(ack.covers),
                    )
                for tag in ack.covers:
                    self._messages.pop(tag, None)
                    waiter = self._waiters.pop(tag, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(None)


def _tag(message: AbstractIncomingMessage) -> int:
    tag = message.delivery_tag
    assert tag is not None  # consumed with acks, never no_ack
    return tag
