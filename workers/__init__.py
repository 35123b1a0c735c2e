"""Workers: consume the per-event-type queues and apply each event to the ledger exactly once."""
