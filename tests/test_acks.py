"""Acks sent together: the tracker's choice of ack multiple, and the acks on a real channel."""

from __future__ import annotations

import asyncio

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from hookpipe.workers.acks import Ack, AckTracker, ChannelAcks
from tests.worker_support import wait_until


def tracker_with(count: int) -> AckTracker:
    tracker = AckTracker()
    for tag in range(1, count + 1):
        tracker.received(tag)
    return tracker


def test_a_contiguous_run_is_one_ack_multiple() -> None:
    tracker = tracker_with(4)
    for tag in (3, 1, 2, 4):  # finished out of order, taken together
        tracker.to_ack(tag)

    assert tracker.take() == [Ack(4, True, (1, 2, 3, 4))]
    assert tracker.take() == []


def test_a_lone_finished_first_tag_is_acked_singly() -> None:
    tracker = tracker_with(3)
    tracker.to_ack(1)

    assert tracker.take() == [Ack(1, False, (1,))]


def test_acks_behind_a_tag_in_flight_go_singly_and_never_cover_it() -> None:
    tracker = tracker_with(6)
    for tag in (1, 2, 4, 5):
        tracker.to_ack(tag)

    # 3 is still in its handler: an ack multiple at 5 would ack it too.
    assert tracker.take() == [Ack(2, True, (1, 2)), Ack(4, False, (4,)), Ack(5, False, (5,))]
    assert tracker.in_flight(3)
    assert not tracker.in_flight(4)

    tracker.to_ack(3)
    tracker.to_ack(6)
    # 4 and 5 are acked already: the run 3..6 acks 3 and 6, and the multiple covers 4, 5 no more.
    assert tracker.take() == [Ack(6, True, (3, 6))]


def test_a_requeued_tag_is_passed_over_not_acked() -> None:
    tracker = tracker_with(5)
    tracker.to_ack(1)
    tracker.to_ack(3)
    tracker.to_ack(4)

    # 2's nack is not sent yet: it is in flight, and stops the run.
    assert tracker.take() == [Ack(1, False, (1,)), Ack(3, False, (3,)), Ack(4, False, (4,))]
    tracker.settled(2)  # nacked, its frame sent
    tracker.to_ack(5)
    assert tracker.take() == [Ack(5, False, (5,))]

    tracker = tracker_with(5)
    tracker.settled(2)
    for tag in (1, 3, 4):
        tracker.to_ack(tag)
    # The nack went first: the ack multiple at 4 settles 1, 3 and 4 (2 is no longer unacked).
    assert tracker.take() == [Ack(4, True, (1, 3, 4))]


def test_a_tag_not_received_yet_ends_the_run() -> None:
    tracker = AckTracker()
    for tag in (1, 2, 4):
        tracker.received(tag)
        tracker.to_ack(tag)

    assert tracker.take() == [Ack(2, True, (1, 2)), Ack(4, False, (4,))]
    tracker.received(3)
    tracker.to_ack(3)
    assert tracker.take() == [Ack(3, False, (3,))]


async def test_acks_on_a_real_channel_settle_exactly_the_finished_messages(
    amqp: AbstractRobustConnection,
) -> None:
    channel = await amqp.channel()
    await channel.set_qos(prefetch_count=20)
    queue = await channel.declare_queue(exclusive=True)
    for n in range(10):
        await channel.default_exchange.publish(
            aio_pika.Message(str(n).encode()), routing_key=queue.name
        )
    delivered: list[AbstractIncomingMessage] = []
    acks = ChannelAcks()

    async def on_message(message: AbstractIncomingMessage) -> None:
        acks.received(message)
        delivered.append(message)

    tag = await queue.consume(on_message)
    await wait_until(lambda: len(delivered) == 10, what="10 deliveries")
    by_body = {int(m.body): m for m in delivered}

    # 0..3 finish together out of order (one ack multiple), 5 is requeued, 4 still runs; 6..9
    # finish behind it.
    await asyncio.gather(*(acks.ack(by_body[n]) for n in (2, 0, 3, 1)))
    await by_body[5].nack(requeue=True)
    acks.requeued(by_body[5])
    await asyncio.gather(*(acks.ack(by_body[n]) for n in (9, 6, 8, 7)))
    await wait_until(lambda: len(delivered) == 11, what="the requeued message back")
    redelivered = delivered[-1]
    assert (int(redelivered.body), redelivered.redelivered) == (5, True)
    await asyncio.gather(acks.ack(by_body[4]), acks.ack(redelivered))
    await acks.drain()

    await queue.cancel(tag)
    # Nothing acked twice (the broker would have closed the channel, failing this declare),
    # nothing left unacked.
    declared = await queue.declare()
    assert not channel.is_closed
    assert declared.message_count == 0
    await channel.close()
