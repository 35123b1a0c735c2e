"""Names and limits shared by the ingress and the workers, each with the reason for its value."""

from typing import Final

# The fanout exchange the ingress publishes every accepted webhook to. It feeds two places in
# the same routing step, so one publisher confirm covers both: the archive stream, and
# EVENTS_EXCHANGE (an exchange-to-exchange binding), which routes to the handled queues. The
# archive is not bound to EVENTS_EXCHANGE itself: a stream bound with "#" there would make every
# message routable, and its alternate exchange would never see an unrouted webhook again.
ACCEPTED_EXCHANGE: Final = "hookpipe.accepted"
# The stream every accepted webhook is appended to, handled or not (`hookpipe events`).
ARCHIVE_STREAM: Final = "hookpipe.archive"
# The topic exchange that routes webhooks to the handled queues, by "{provider}.{event type}".
EVENTS_EXCHANGE: Final = "hookpipe.events"
# Alternate exchange of EVENTS_EXCHANGE: what no queue is bound for lands here instead of vanishing.
UNROUTED_EXCHANGE: Final = "hookpipe.unrouted"
UNROUTED_QUEUE: Final = "hookpipe.unrouted"
# Direct exchange for dead letters, routed by "{queue}.dlq".
DEAD_LETTER_EXCHANGE: Final = "hookpipe.dlx"
# Direct exchange a delayed retry expires into; each handled queue is bound to it by its own name,
# so a retried message comes back to its own queue and to no other queue bound to the same key.
REQUEUE_EXCHANGE: Final = "hookpipe.requeue"
# Prefix of the delayed-retry queues, one per delay in the retry schedule.
RETRY_PREFIX: Final = "hookpipe.retry"
DLQ_SUFFIX: Final = ".dlq"

# Message headers set by the ingress and kept through retries and dead-lettering.
HEADER_RECEIVED_AT: Final = "x-hookpipe-received-at"  # ms since the epoch, when the ingress read it
HEADER_REQUEST_ID: Final = "x-hookpipe-request-id"
HEADER_ATTEMPT: Final = "x-hookpipe-attempt"  # deliveries so far to a handler; 0 when new
HEADER_PROVIDER: Final = "x-hookpipe-provider"
HEADER_EVENT_ID: Final = "x-hookpipe-event-id"
# Set by the worker on a dead letter, to say why it died.
HEADER_QUEUE: Final = "x-hookpipe-queue"
HEADER_ERROR_TYPE: Final = "x-hookpipe-error-type"
HEADER_ERROR: Final = "x-hookpipe-error"
HEADER_FIRST_FAILURE: Final = "x-hookpipe-first-failure"  # ms since the epoch
HEADER_LAST_FAILURE: Final = "x-hookpipe-last-failure"  # ms since the epoch
HEADER_WORKER: Final = "x-hookpipe-worker"
# Set by `hookpipe dlq replay` and `hookpipe events replay`.
HEADER_REPLAYED_AT: Final = "x-hookpipe-replayed-at"  # ms since the epoch
HEADER_REPLAY_COUNT: Final = "x-hookpipe-replay-count"
# Set by `hookpipe events replay`: the archive offset the replayed copy was read from.
HEADER_REPLAYED_FROM: Final = "x-hookpipe-replayed-from"
