"""The worker's entry point: sets the broker and imports every actor.

Run by ``guiju worker`` (as ``dramatiq services.worker``) and by the embedded runtime.
"""

from services.broker import broker
from services.mail import service as _mail  # noqa: F401  (subscribes mail delivery to the outbox)
from services.outbox import actors as _outbox_actors  # noqa: F401

__all__ = ["broker"]
