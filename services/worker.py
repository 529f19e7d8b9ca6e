"""The worker's entry point: sets the broker and imports every actor.

Run by ``guiju worker`` (as ``dramatiq services.worker``) and by the embedded runtime.
"""

import gc
import os

from services.automation import actors as _automation_actors
from services.automation import escalations as _escalations  # noqa: F401  (default SLA escalations)
from services.broker import broker
from services.mail import service as _mail  # noqa: F401  (subscribes mail delivery to the outbox)
from services.marketplace import actors as _marketplace_actors
from services.oauth import service as _oauth  # noqa: F401  (keeps access tokens' roles in step with memberships)
from services.outbox import actors as _outbox_actors  # noqa: F401
from services.sops.runs import actors as _runs_actors  # noqa: F401  (SLA timers)
from services.sops.runs import notices as _notices  # noqa: F401  (notices on run events)
from services.webhooks import actors as _webhooks_actors  # noqa: F401  (subscribes deliveries to the outbox)

if os.environ.get("GUIJU_PROCESS") == "worker":  # started by `guiju worker` through dramatiq's CLI
    from services.logs import configure_logging
    from services.marketplace import host as plugin_host
    from services.marketplace import service as marketplace
    from services.notifications import service as notifications
    from services.settings import load_settings
    from services.webhooks import service as webhooks

    worker_settings = load_settings("production")
    configure_logging(worker_settings.log_level)
    marketplace.configure(worker_settings)
    notifications.configure(worker_settings)
    webhooks.configure(worker_settings)
    marketplace.activate(*marketplace.load_plugins(worker_settings))
    plugin_host.use_platform_mail(worker_settings)
    # Consume the loaded plugins' queues from the start: their actions and their hooks.
    _automation_actors.declare_plugin_queues(sorted(marketplace.installed_plugin_names()))
    _marketplace_actors.declare_plugin_hooks(sorted(marketplace.installed_plugin_names()))
    # Everything imported so far lives as long as the process: out of the collector's sight, it no
    # longer lengthens every full collection (pauses that land on events in flight).
    gc.collect()
    gc.freeze()

__all__ = ["broker"]
