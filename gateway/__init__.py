"""tuneloop's gateway: the FastAPI app and the only place that wires the other packages."""

from gateway.app import create_app
from gateway.settings import Settings

__all__ = ["Settings", "create_app"]
