"""The outbox: the only way an event leaves a transaction, and the relay that publishes it."""
