"""The CDS Hooks 2.0 service: discovery, ``patient-view`` and ``order-sign`` services, feedback.

Build the ASGI app with :func:`b12screen.cdshooks.app.create_app`; ``b12screen serve`` runs it with uvicorn.
"""

from __future__ import annotations

from .config import IssuerConfig, ServiceConfig

__all__ = ["IssuerConfig", "ServiceConfig"]
