"""The FastAPI application: /dicomweb, /api, /ui and the OHIF viewer at the web root.

Route order matters: RadPilot's own prefixes are registered first and OHIF's
catch-all (static files with index.html as the fallback) last, so OHIF can never
shadow an API route, and an unknown /api, /dicomweb or /ui path is a 404. Every request
passes through the authentication middleware (:mod:`radpilot.web.auth`) first.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from radpilot import __version__
from radpilot.archive import Archive
from radpilot.config import Settings
from radpilot.dictation import Dictation
from radpilot.engine.research_exports import ResearchExports
from radpilot.pacs.dicomweb import make_dicomweb_router
from radpilot.security.pseudonyms import Pseudonymizer, load_or_create_secret
from radpilot.web.admin_pages import make_admin_router
from radpilot.web.api import make_api_router
from radpilot.web.audit_middleware import AuditMiddleware
from radpilot.web.auth import AuthMiddleware, make_auth_router
from radpilot.web.body_limit import BodyLimitMiddleware
from radpilot.web.deidentify import ResearcherFilter
from radpilot.web.dictation_api import pad_router as dictation_pad_router
from radpilot.web.dictation_api import router as dictation_router
from radpilot.web.engine_api import router as engine_router
from radpilot.web.monitoring_api import router as monitoring_router
from radpilot.web.ohif import make_ohif_router, resolve_ohif_dir
from radpilot.web.oidc import make_oidc_router
from radpilot.web.pages import make_pages_router, static_files
from radpilot.web.reports_api import make_reports_router
from radpilot.web.research_export_api import router as research_export_router
from radpilot.web.research_export_pages import make_research_export_pages_router
from radpilot.web.review_api import router as review_router
from radpilot.web.review_pages import make_review_pages_router
from radpilot.web.worklist_pages import make_worklist_router

logger = logging.getLogger(__name__)


def create_app(settings: Settings, archive: Archive) -> FastAPI:
    """Build RadPilot's web application over ``archive``."""
    app = FastAPI(title="RadPilot", version=__version__, docs_url="/api/docs", openapi_url="/api/openapi.json")
    app.state.settings = settings
    app.state.archive = archive
    app.state.ohif_dir = resolve_ohif_dir(settings)
    # Set when the server stops: long-lived responses (the worklist's event streams) end at their next poll.
    app.state.stopping = threading.Event()
    app.state.pseudonymizer = Pseudonymizer(load_or_create_secret(settings.pseudonym_secret_file or settings.data_dir / "pseudonym.key"))
    app.add_middleware(AuditMiddleware, engine=archive.engine)
    # The recogniser loads on first use (a few seconds, about 100 MB), not at start.
    app.state.dictation = Dictation(settings)
    # Research exports run in the server's worker thread (RadPilotServer starts it); the API only queues and reads them.
    app.state.research_exports = ResearchExports(settings, archive)
    app.include_router(
        make_dicomweb_router(archive, max_stow_bytes=settings.max_stow_bytes, body_idle_timeout_s=settings.http_body_idle_timeout_s),
        prefix="/dicomweb",
    )

    @app.get("/api/health")
    def health() -> dict:
        """Liveness: the node answers, with its version and AE title."""
        return {"status": "ok", "version": __version__, "ae_title": settings.ae_title}

    app.include_router(engine_router)
    app.include_router(monitoring_router)
    app.include_router(review_router)
    app.include_router(research_export_router)
    app.include_router(make_reports_router())
    app.include_router(dictation_router)
    app.include_router(dictation_pad_router)
    app.include_router(make_api_router(archive), prefix="/api")
    app.mount("/ui/static", static_files(), name="ui-static")
    app.include_router(make_worklist_router(archive))
    app.include_router(make_admin_router(settings, archive))
    app.include_router(make_auth_router(archive.engine, settings), prefix="/ui")
    if settings.oidc_issuer and settings.oidc_client_id:
        app.include_router(make_oidc_router(archive.engine, settings), prefix="/ui")
    app.include_router(make_pages_router(archive), prefix="/ui")
    app.include_router(make_review_pages_router(), prefix="/ui")
    app.include_router(make_research_export_pages_router(), prefix="/ui")
    app.include_router(make_ohif_router(app.state.ohif_dir))
    # The last added is the outermost: authentication first, so every route, mount, 404 and FastAPI's
    # own /api/docs pass through it; then the researcher's filter, which reads the principal it set.
    # Inside authentication: a request that is refused anyway is never read.
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_request_bytes, exempt_prefixes=("/dicomweb",))
    app.add_middleware(ResearcherFilter, pseudonymizer=app.state.pseudonymizer)
    app.add_middleware(AuthMiddleware, engine=archive.engine, settings=settings)
    if app.state.ohif_dir is not None:
        logger.info("serving the OHIF viewer", extra={"ohif_dir": str(app.state.ohif_dir)})
    app.openapi = lambda: _openapi_with_worded_422(app)  # type: ignore[method-assign]
    return app


def _openapi_with_worded_422(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema, with a 422's ``detail`` documented as it is sent: a list of field errors, or one sentence.

    FastAPI documents only its own validation errors (a list); RadPilot's routes also answer
    422 with a sentence naming the problem (an unknown report section, a sign without
    confirmation). A client generated from the schema must accept both.
    """
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        error = schema.get("components", {}).get("schemas", {}).get("HTTPValidationError")
        if error is not None:
            listed = error["properties"]["detail"]
            error["properties"]["detail"] = {"anyOf": [listed, {"type": "string"}], "title": "Detail"}
        app.openapi_schema = schema
    return app.openapi_schema
