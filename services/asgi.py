"""The ASGI application object for ``guiju api`` (uvicorn imports it in each worker process)."""

from services.app import create_app
from services.logs import configure_logging
from services.settings import load_settings

_settings = load_settings("production")
configure_logging(_settings.log_level)
app = create_app(_settings)
