"""Every table of the platform in one metadata: the whole schema, for the migrations, the app factory
and the CLI.

Only those three (and tests) import this module. A service imports its own models and other
services' ``service.py``, never this: otherwise every service would depend on every other through
the schema.
"""

from services.accounts import models as accounts_models
from services.audit import models as audit_models
from services.automation import models as automation_models
from services.files import models as files_models
from services.gallery import models as gallery_models
from services.marketplace import models as marketplace_models
from services.notifications import models as notifications_models
from services.oauth import models as oauth_models
from services.outbox import models as outbox_models
from services.records import models as records_models
from services.scheduler import models as scheduler_models
from services.sops.calendar import models as calendar_models
from services.sops.procedures import models as procedures_models
from services.sops.runs import models as runs_models
from services.webhooks import models as webhooks_models
from tenants import models as tenant_models
from tenants.base import Base

metadata = Base.metadata

__all__ = [
    "accounts_models",
    "audit_models",
    "automation_models",
    "calendar_models",
    "files_models",
    "gallery_models",
    "marketplace_models",
    "metadata",
    "notifications_models",
    "oauth_models",
    "outbox_models",
    "procedures_models",
    "records_models",
    "runs_models",
    "scheduler_models",
    "tenant_models",
    "webhooks_models",
]
