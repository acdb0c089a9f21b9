"""Administration pages (administrators only): remote nodes with C-ECHO, routing rules and what they match,
jobs with errors and a retry, models with versions, checksums, gate and activation, the audit trail.

* ``GET /ui/admin/nodes|rules|jobs|models|audit|users``: the pages;
* ``POST /api/admin/nodes/{name}/echo``: C-ECHO a configured node (JSON: ok, status, message, ms);
* ``POST /api/jobs/{id}/retry``: put a failed or cancelled job back in the queue (audited).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from radpilot.analyses import discover_analyses, model_registry
from radpilot.archive import Archive
from radpilot.archive.query import Query, QueryLevel
from radpilot.config import Settings
from radpilot.engine.job_store import JobStore
from radpilot.engine.jobs import JobState
from radpilot.engine.pipeline import plan_study
from radpilot.engine.routing import Condition, RuleSet, load_rules
from radpilot.pacs.scu import DicomNetworkError, echo
from radpilot.security.audit import events, record
from radpilot.security.principal import Role
from radpilot.security.tokens import create_token, list_tokens, revoke_token
from radpilot.security.users import AccountError, add_user, disable_user, generate_password, list_users
from radpilot.validation.gate import check_activation
from radpilot.validation.store import ValidationStore
from radpilot.web.params import RowId
from radpilot.web.reading_room import PAGE_HEADERS, TEMPLATES, page_context, principal_of
from radpilot.web.worklist_pages import study_url

logger = logging.getLogger(__name__)

SECTIONS = ("nodes", "rules", "jobs", "models", "audit", "users")
RULE_SAMPLE_STUDIES = 20  # rules are shown with what they match among this many newest studies


def describe_condition(condition: Condition) -> str:
    operand = condition.operand.pattern if condition.operator == "regex" else condition.operand
    if isinstance(operand, (set, frozenset, list, tuple)):
        operand = ", ".join(sorted(str(v) for v in operand))
    return f"{condition.attribute} {condition.operator} {operand}"


def _rules_and_analyses(request: Request, settings: Settings) -> tuple[RuleSet, dict[str, Any]]:
    engine = getattr(request.app.state, "engine", None)
    if engine is not None:
        return engine.rules, engine.analyses
    analyses = discover_analyses()
    return load_rules(settings.rules_file, analyses), analyses


def rule_matches(archive: Archive, rules: RuleSet, analyses: dict[str, Any], studies: int) -> dict[str, list[dict[str, str]]]:
    """For each rule, the series it matches among the ``studies`` newest studies (routing explained, nothing queued)."""
    matches: dict[str, list[dict[str, str]]] = {rule.name: [] for rule in rules.rules}
    for study in archive.find(Query(QueryLevel.STUDY, {}, limit=studies)):
        uid = study["StudyInstanceUID"]
        for plan in plan_study(archive, rules, analyses, uid, None):
            for explanation in plan.decision.explanations if plan.decision else []:
                if explanation.matched and explanation.rule in matches:
                    matches[explanation.rule].append({"study_instance_uid": uid, "series_instance_uid": plan.series_instance_uid})
    return matches


def model_rows(archive: Archive) -> list[dict[str, Any]]:
    """Every model manifest and analysis with its version, checksum, gate decision and active version."""
    analyses = discover_analyses()
    store = ValidationStore(archive.engine, None)
    subjects = [("model", m.name, m.version, m.sha256) for m in model_registry(analyses).manifests()]
    subjects += [("analysis", name, str(a.version), "") for name, a in sorted(analyses.items())]
    rows = []
    for kind, name, version, sha256 in subjects:
        decision = check_activation(store, name, version, analyses=analyses)
        active = store.active(name)
        rows.append(
            {
                "kind": kind,
                "name": name,
                "version": version,
                "sha256": sha256,
                "gate_passed": decision.passed,
                "gate_message": decision.message,
                "active_version": active.version if active else None,
                "override": bool(active and active.override),
            }
        )
    return rows


def make_admin_router(settings: Settings, archive: Archive) -> APIRouter:
    router = APIRouter()

    def admin_page(request: Request, section: str, **values: Any) -> HTMLResponse:
        context = page_context(request, "admin")
        principal = principal_of(request)
        status = 200
        if principal is None:
            context["refusal"], status = context["t"]("error.unauthenticated"), 401
        elif principal.role is not Role.ADMINISTRATOR:
            context["refusal"], status = context["t"]("error.forbidden", roles=Role.ADMINISTRATOR.value), 403
        else:
            context["refusal"] = ""
        context.update(section=section, sections=SECTIONS, study_url=study_url, values=values if status == 200 else {})
        html = TEMPLATES.get_template("admin.html").render(**context)
        return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)

    def is_admin(request: Request) -> bool:
        principal = principal_of(request)
        return principal is not None and principal.role is Role.ADMINISTRATOR

    def require_admin(request: Request) -> Any:
        principal = principal_of(request)
        if principal is None:
            raise HTTPException(401, "sign in first")
        if principal.role is not Role.ADMINISTRATOR:
            raise HTTPException(403, f"{principal.kind} {principal.name!r} has role {principal.role.value!r}; this needs: administrator")
        return principal

    @router.get("/ui/admin", include_in_schema=False)
    @router.get("/ui/admin/", include_in_schema=False)
    def admin_root() -> RedirectResponse:
        return RedirectResponse("/ui/admin/nodes", status_code=307)

    @router.get("/ui/admin/nodes", response_class=HTMLResponse, include_in_schema=False)
    def nodes_page(request: Request) -> HTMLResponse:
        return admin_page(request, "nodes", nodes=settings.nodes)

    @router.get("/ui/admin/rules", response_class=HTMLResponse, include_in_schema=False)
    def rules_page(request: Request) -> HTMLResponse:
        if not is_admin(request):
            return admin_page(request, "rules")
        rules, analyses = _rules_and_analyses(request, settings)
        matches = rule_matches(archive, rules, analyses, RULE_SAMPLE_STUDIES)
        return admin_page(request, "rules", rules=rules, matches=matches, describe=describe_condition, sample=RULE_SAMPLE_STUDIES)

    @router.get("/ui/admin/jobs", response_class=HTMLResponse, include_in_schema=False)
    def jobs_page(request: Request, all: str = "") -> HTMLResponse:  # noqa: A002 - the query parameter's name
        if not is_admin(request):
            return admin_page(request, "jobs")
        store = JobStore(archive.engine)
        jobs = store.list(limit=200) if all else [j for j in store.list(limit=500) if j.error and j.state is not JobState.DONE][:200]
        return admin_page(request, "jobs", jobs=jobs, show_all=bool(all))

    @router.get("/ui/admin/models", response_class=HTMLResponse, include_in_schema=False)
    def models_page(request: Request) -> HTMLResponse:
        if not is_admin(request):
            return admin_page(request, "models")
        return admin_page(request, "models", models=model_rows(archive))

    @router.get("/ui/admin/audit", response_class=HTMLResponse, include_in_schema=False)
    def audit_page(request: Request) -> HTMLResponse:
        if not is_admin(request):
            return admin_page(request, "audit")
        return admin_page(request, "audit", events=events(archive.engine, limit=200))

    @router.get("/ui/admin/users", response_class=HTMLResponse, include_in_schema=False)
    def users_page(request: Request) -> HTMLResponse:
        if not is_admin(request):
            return admin_page(request, "users")
        return admin_page(
            request, "users", users=list_users(archive.engine), tokens=list_tokens(archive.engine), roles=[r.value for r in Role]
        )

    def account_action(action: Any) -> dict[str, Any]:
        try:
            return action()
        except AccountError as exc:
            raise HTTPException(409 if "exists" in str(exc) else 404 if str(exc).startswith("no ") else 400, str(exc)) from exc
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from exc

    @router.post("/api/admin/users", tags=["administration"])
    def create_user(request: Request, name: str, role: str) -> dict[str, Any]:
        """Add a local user with a one-time password (shown in this answer only; changed at first sign-in)."""
        principal = require_admin(request)
        password = generate_password()

        def add() -> dict[str, Any]:
            info = add_user(archive.engine, name, Role.parse(role), password, must_change_password=True, by=principal.name)
            return {**info.to_dict(), "one_time_password": password}

        return account_action(add)

    @router.post("/api/admin/users/{name}/disable", tags=["administration"])
    def disable(request: Request, name: str) -> dict[str, Any]:
        """Disable a user; their sessions end at once (audited)."""
        principal = require_admin(request)
        if name == principal.name:
            raise HTTPException(409, "an administrator cannot disable their own account here")
        return account_action(lambda: (disable_user(archive.engine, name, by=principal.name), {"name": name, "disabled": True})[1])

    @router.post("/api/admin/tokens", tags=["administration"])
    def new_token(request: Request, name: str, role: str) -> dict[str, Any]:
        """Create an API token for a machine client; its secret is in this answer only (stored hashed)."""
        principal = require_admin(request)
        return account_action(
            lambda: {
                "name": name,
                "role": Role.parse(role).value,
                "token": create_token(archive.engine, name, Role.parse(role), by=principal.name),
            }
        )

    @router.post("/api/admin/tokens/{name}/revoke", tags=["administration"])
    def revoke(request: Request, name: str) -> dict[str, Any]:
        """Revoke a token; it stops working at once (audited)."""
        principal = require_admin(request)
        return account_action(lambda: (revoke_token(archive.engine, name, by=principal.name), {"name": name, "revoked": True})[1])

    @router.post("/api/admin/nodes/{name}/echo", tags=["administration"])
    def echo_node(request: Request, name: str) -> dict[str, Any]:
        """C-ECHO a configured remote node; ``ok`` false with the reason when it does not answer."""
        principal = require_admin(request)
        try:
            node = settings.node(name)
        except KeyError as exc:
            raise HTTPException(404, str(exc.args[0])) from exc
        started = time.perf_counter()
        try:
            status = echo(settings, node)
            ok, message = status == 0, "" if status == 0 else f"C-ECHO status 0x{status:04X}"
        except DicomNetworkError as exc:
            status, ok, message = None, False, str(exc)
        elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
        logger.info("C-ECHO from the administration page", extra={"node": node.name, "ok": ok, "who": principal.name, "ms": elapsed_ms})
        return {"node": node.name, "ok": ok, "status": status, "message": message, "ms": elapsed_ms}

    @router.post("/api/jobs/{job_id}/retry", tags=["engine"])
    def retry_job(request: Request, job_id: RowId) -> dict[str, Any]:
        """Run a failed or cancelled job again (attempts reset); 409 when it is neither."""
        principal = require_admin(request)
        engine = getattr(request.app.state, "engine", None)
        outcome = engine.queue.requeue(job_id) if engine is not None else JobStore(archive.engine).requeue(job_id)
        if outcome is None:
            raise HTTPException(404, f"no job {job_id}")
        if not outcome.requeued:
            raise HTTPException(409, f"job {job_id} is {outcome.job.state.value}; only failed or cancelled jobs can be retried")
        record(archive.engine, who=principal.name, action="job.retry", target=f"job {job_id}", details={"analysis": outcome.job.analysis})
        return {"id": job_id, "state": outcome.job.state.value}

    return router
