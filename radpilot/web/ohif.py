"""Hosting the OHIF viewer at the web root.

The OHIF build from npm (``@ohif/app``) hard-codes the public path ``/``: its
index.html loads ``/app-config.js`` and ``/app.bundle.<hash>.js``, so it must be
served at the root of the site. This module serves

* ``/app-config.js``: RadPilot's own OHIF configuration, with one DICOMweb data
  source pointing at RadPilot's ``/dicomweb`` service (the shipped file has none);
* every other path: the file of that name in the OHIF ``dist/`` folder, or
  ``index.html`` for paths that are OHIF routes (``/``, ``/viewer?...``), so the
  single-page app can route them itself.

Paths under RadPilot's own prefixes (``/api``, ``/dicomweb``, ``/ui``) are never
answered with OHIF's index.html: an unknown one is a plain JSON 404.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response

from radpilot.config import Settings

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OHIF_DIR = REPO_ROOT / "third_party" / "ohif" / "dist"

# RadPilot's own URL prefixes: never served from OHIF's dist nor its index.html fallback.
RESERVED_PREFIXES: tuple[str, ...] = ("api", "dicomweb", "ui")

# A missing file with one of these extensions is a 404, not the index.html fallback
# (serving HTML for a script or a wasm module only produces a confusing MIME error).
ASSET_EXTENSIONS = frozenset(
    {
        ".js",
        ".mjs",
        ".css",
        ".map",
        ".wasm",
        ".json",
        ".png",
        ".jpg",
        ".gif",
        ".ico",
        ".svg",
        ".woff",
        ".woff2",
        ".ttf",
        ".eot",
        ".txt",
        ".xml",
        ".webmanifest",
        ".html",
    }
)

# Browsers ask for /favicon.ico on every page (also RadPilot's /ui pages); OHIF keeps it in assets/.
ALIASES = {"favicon.ico": "assets/favicon.ico"}

# Files whose names carry a content hash never change under the same name.
_HASHED_NAME = re.compile(r"(\.bundle\.[0-9a-f]{8,}\.js$)|(^[0-9a-f]{16}\.(wasm|woff2?|ttf|png|svg)$)")

# Cross-origin isolation lets OHIF (cornerstone3D, onnxruntime-web) use SharedArrayBuffer;
# every resource OHIF loads comes from this same origin, so nothing is blocked by it.
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}

NOT_INSTALLED_MESSAGE = (
    "The OHIF viewer is not installed on this RadPilot node. Run `make ohif` "
    "(scripts/install_ohif.sh) or set RADPILOT_OHIF_DIR to a built OHIF dist/ folder. "
    "The study list is at /ui/."
)


def resolve_ohif_dir(settings: Settings) -> Path | None:
    """The OHIF ``dist/`` folder to serve, or None when no usable one exists.

    ``settings.ohif_dir`` wins when set; otherwise ``<repo>/third_party/ohif/dist``
    is used when it holds an index.html.
    """
    candidate = settings.ohif_dir if settings.ohif_dir is not None else DEFAULT_OHIF_DIR
    candidate = Path(candidate).resolve()
    if (candidate / "index.html").is_file():
        return candidate
    if settings.ohif_dir is not None:
        logger.warning("configured OHIF folder has no index.html; the viewer is disabled", extra={"ohif_dir": str(candidate)})
    else:
        logger.info("OHIF viewer not installed; the viewer is disabled", extra={"ohif_dir": str(candidate)})
    return None


def data_source_configuration(dicomweb_path: str = "/dicomweb") -> dict[str, Any]:
    """The ``configuration`` of OHIF's DICOMweb data source for RadPilot's own service.

    The roots are written as paths here; :func:`app_config_js` prefixes them with
    the page's origin in the browser, so they are absolute URLs with exactly the
    scheme, host and port the user reached RadPilot with (also behind a proxy).
    """
    return {
        "friendlyName": "RadPilot",
        "name": "radpilot",
        "qidoRoot": dicomweb_path,
        "wadoRoot": dicomweb_path,
        "wadoUriRoot": dicomweb_path,
        "qidoSupportsIncludeField": False,
        "imageRendering": "wadors",
        "thumbnailRendering": "wadors",
        "enableStudyLazyLoad": True,
        "supportsFuzzyMatching": False,
        "supportsWildcard": True,
        # staticWado=true is for static file trees (e.g. S3) that cannot filter a
        # query: OHIF then filters QIDO results itself and asks for image/* frames.
        # RadPilot runs real QIDO-RS and WADO-RS, so it is off.
        "staticWado": False,
        "supportsReject": False,
        "dicomUploadEnabled": False,
        "singlepart": "video",
        "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
        "omitQuotationForMultipartRequest": True,
    }


def ohif_config(dicomweb_path: str = "/dicomweb") -> dict[str, Any]:
    """OHIF's ``window.config`` for RadPilot (extensions and modes are those built in)."""
    return {
        "name": "radpilot",
        "routerBasename": None,
        "extensions": [],
        "modes": [],
        "customizationService": {},
        "showStudyList": True,
        "maxNumberOfWebWorkers": 3,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": True,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "groupEnabledModesFirst": True,
        "maxNumRequests": {"interaction": 100, "thumbnail": 5, "prefetch": 25},
        "showErrorDetails": "always",
        "defaultDataSourceName": "radpilot",
        "dataSources": [
            {
                "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
                "sourceName": "radpilot",
                "configuration": data_source_configuration(dicomweb_path),
            }
        ],
    }


def app_config_js(dicomweb_path: str = "/dicomweb") -> str:
    """The text of ``/app-config.js``: ``window.config`` with absolute DICOMweb roots.

    The roots become ``window.location.origin + '/dicomweb'`` when the page loads.
    """
    config_json = json.dumps(ohif_config(dicomweb_path), indent=2)
    return (
        "/** RadPilot's OHIF configuration, generated by radpilot.web.ohif. */\n"
        f"window.config = {config_json};\n"
        "(function () {\n"
        "  var origin = window.location.origin;\n"
        "  window.config.dataSources.forEach(function (source) {\n"
        "    var c = source.configuration;\n"
        "    ['qidoRoot', 'wadoRoot', 'wadoUriRoot'].forEach(function (key) {\n"
        "      if (typeof c[key] === 'string' && c[key].charAt(0) === '/') { c[key] = origin + c[key]; }\n"
        "    });\n"
        "  });\n"
        "})();\n"
    )


def is_reserved_path(path: str) -> bool:
    """True when ``path`` (without leading slash) is under one of RadPilot's own prefixes."""
    first = path.lstrip("/").split("/", 1)[0]
    return first in RESERVED_PREFIXES


def _static_file(ohif_dir: Path, path: str) -> Path | None:
    """The file under ``ohif_dir`` for a URL path, or None (missing, a folder, or outside it)."""
    if not path or "\x00" in path:
        return None
    candidate = (ohif_dir / path).resolve()
    if not candidate.is_relative_to(ohif_dir) or not candidate.is_file():
        return None
    return candidate


def _cache_control(file: Path) -> str:
    if _HASHED_NAME.search(file.name):
        return "public, max-age=31536000, immutable"
    return "no-cache"


def _file_response(file: Path) -> FileResponse:
    media_type = "application/wasm" if file.suffix == ".wasm" else None
    headers = {"Cache-Control": _cache_control(file), **ISOLATION_HEADERS}
    return FileResponse(file, media_type=media_type, headers=headers)


def _not_found() -> JSONResponse:
    return JSONResponse({"detail": "Not Found"}, status_code=404)


def serve_ohif_path(ohif_dir: Path | None, path: str, method: str) -> Response:
    """Answer a request for ``/<path>`` that no RadPilot route matched."""
    if is_reserved_path(path):
        return _not_found()
    if method not in ("GET", "HEAD"):
        return JSONResponse({"detail": "Method Not Allowed"}, status_code=405, headers={"Allow": "GET, HEAD"})
    is_asset = Path(path).suffix.lower() in ASSET_EXTENSIONS
    if ohif_dir is None:
        if path.strip("/") == "":
            return RedirectResponse("/ui/", status_code=307)
        return _not_found() if is_asset else PlainTextResponse(NOT_INSTALLED_MESSAGE, status_code=503)
    file = _static_file(ohif_dir, ALIASES.get(path, path)) or _static_file(ohif_dir, path)
    if file is not None:
        return _file_response(file)
    if is_asset:
        return _not_found()
    return _file_response(ohif_dir / "index.html")


def make_ohif_router(ohif_dir: Path | None, dicomweb_path: str = "/dicomweb") -> APIRouter:
    """Routes for ``/app-config.js`` and the catch-all that serves OHIF; include it last."""
    router = APIRouter(include_in_schema=False)
    config_text = app_config_js(dicomweb_path)

    @router.get("/app-config.js")
    def app_config() -> Response:
        """RadPilot's OHIF configuration (never OHIF's shipped app-config.js)."""
        return Response(
            config_text,
            media_type="text/javascript; charset=utf-8",
            headers={"Cache-Control": "no-cache", **ISOLATION_HEADERS},
        )

    @router.api_route("/{path:path}", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
    def ohif(path: str, request: Request) -> Response:
        """OHIF's files, with index.html for its client-side routes."""
        if path.strip("/") == "" and not request.url.query:
            # The bare web root lands on RadPilot's worklist; OHIF keeps its viewer routes (/viewer?StudyInstanceUIDs=...)
            # and its own study list with any query (e.g. /?resultsPerPage=25).
            return RedirectResponse("/ui/", status_code=307)
        return serve_ohif_path(ohif_dir, path, request.method)

    return router
