"""The responder API (no ``from __future__ import annotations``: FastAPI reads the
annotations of the route closures at runtime).


Token authentication (``Authorization: Bearer <token>``) with roles: ``viewer`` reads;
``operator`` also acknowledges, resolves, reopens, assigns, notes and manages
subscriptions; ``analyst`` reads (rules and backtests to come); ``admin`` may do
everything. A missing or unknown token gets 401, a role that may not act gets 403.

Hardening: request limits before parsing (413, 414, 431; ``limits``), failed
authentications throttled per client address (429 with ``Retry-After``; ``throttle``)
and logged, a store outage answered with 503 and ``Retry-After`` everywhere, security
headers on every response (``security``), CORS only for configured origins, webhook
destinations checked (``citywatch.streams.webhook_policy``), text made XML-safe in CAP
and Atom, and the API documentation page served from vendored files.

Example:
    >>> from fastapi.testclient import TestClient       # doctest: +SKIP
    >>> client = TestClient(create_api(Settings()))     # doctest: +SKIP
    >>> client.get("/health").json()                    # doctest: +SKIP
    {'status': 'ok'}
"""


import asyncio
import json
import logging
import math
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal, NoReturn

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import AwareDatetime

from citywatch.ops.api.atom import atom_feed
from citywatch.ops.api.health import HealthChecks
from citywatch.ops.api.limits import RequestLimits
from citywatch.ops.api.metrics import ApiMetrics, CountRequests
from citywatch.ops.api.models import (
    Alert,
    Assignment,
    DeliveryStatus,
    FeedUrl,
    Health,
    Incident,
    IncidentDetail,
    IncidentPage,
    IssuedToken,
    NoteIn,
    Problem,
    TokenIn,
    TokenInfo,
)
from citywatch.ops.api.rule_routes import rule_routes
from citywatch.ops.api.security import SecurityHeaders
from citywatch.ops.api.throttle import FailureThrottle
from citywatch.ops.cap import CapWriter
from citywatch.ops.explain import as_prov, explain_alert
from citywatch.ops.gis import incident_features
from citywatch.ops.live_zones import LiveZones
from citywatch.ops.pipeline_status import TimedCache, broker_status, tile_origins
from citywatch.ops.settings import Settings
from citywatch.ops.store.changes import incident_changes, last_change_id
from citywatch.ops.store.lifecycle import IncidentDesk, IncidentNotFound, InvalidTransition
from citywatch.ops.store.outage import OUTAGE_ERRORS, store_outage
from citywatch.ops.store.outbox import Outbox
from citywatch.ops.store.queries import (
    IncidentFilter,
    Status,
    get_alert,
    get_incident,
    list_incidents,
    recent_alerts,
)
from citywatch.ops.store.rulesets import RuleSetBook
from citywatch.ops.store.store import IncidentStore
from citywatch.ops.store.subscriptions import SubscriptionBook
from citywatch.ops.store.summary import console_summary
from citywatch.ops.store.tokens import Role, TokenBook, TokenNameTaken
from citywatch.rules.engine import build_zone_index
from citywatch.rules.loader import load_ruleset
from citywatch.streams.envelope import Domain
from citywatch.streams.subscriptions import TEAM_PATTERN, Subscription, SubscriptionIn
from citywatch.streams.vocabulary import Severity
from citywatch.streams.webhook_policy import WebhookPolicy

log = logging.getLogger(__name__)
READ: frozenset[Role] = frozenset({"viewer", "operator", "analyst", "admin"})
RESPOND: frozenset[Role] = frozenset({"operator", "admin"})
PROPOSE: frozenset[Role] = frozenset({"analyst", "admin"})
ADMIN: frozenset[Role] = frozenset({"admin"})
CAP_MEDIA = "application/cap+xml"
STATIC = FilePath(__file__).parent / "static"
RETRY_AFTER_OUTAGE = 5
ALWAYS: dict[int | str, dict[str, Any]] = {
    413: {"model": Problem, "description": "request body over the limit"},
    414: {"model": Problem, "description": "URL over the limit"},
    431: {"model": Problem, "description": "request headers over the limit"},
    503: {"model": Problem, "description": "incident store unavailable (see Retry-After)"},
}
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "missing or unknown token"},
    403: {"model": Problem, "description": "role may not do this"},
    429: {"model": Problem, "description": "too many failed authentications from this "
                                           "address (see Retry-After)"},
}


def _printable(value: Any) -> Any:
    """``value`` with every string encodable as UTF-8 (lone surrogates escaped)."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_printable(k): _printable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_printable(v) for v in value]
    return value


FILTER_PARAMETERS = frozenset({"status", "min_severity", "domain", "zone", "bbox", "since",
                               "until", "limit", "offset"})


def invalid(loc: tuple[str, ...], message: str, given: Any = None) -> NoReturn:
    """Refuse the request with FastAPI's own 422 format (one format for every 422)."""
    raise RequestValidationError([{"type": "value_error", "loc": loc, "msg": message,
                                   "input": given}])


def _token_hint(credentials: HTTPAuthorizationCredentials | None) -> str:
    """What a failed request presented, for the log: never the secret."""
    if credentials is None:
        return "no token"
    return f"token starting {credentials.credentials[:4]!r}, {len(credentials.credentials)} chars"


class Caller:
    """Who is calling: token name (the audit actor) and role."""

    def __init__(self, name: str, role: Role) -> None:
        self.name = name
        self.role = role


def create_api(settings: Settings, store: IncidentStore | None = None) -> FastAPI:
    """The FastAPI application over one incident store."""
    store = store or IncidentStore(settings.database_url)
    store.create_schema()
    desk, book, tokens = IncidentDesk(store), SubscriptionBook(store), TokenBook(store)
    outbox = Outbox(store)
    ruleset = load_ruleset(settings.rules_path)
    cap = CapWriter(settings.cap_sender, build_zone_index(ruleset), status=settings.cap_status)
    bearer = HTTPBearer(auto_error=False)
    throttle = FailureThrottle(settings.api_auth_failures_per_minute, 60.0)
    webhooks = WebhookPolicy(settings.webhook_allow)
    live_zones = LiveZones(store, settings)
    checks = HealthChecks(store, bootstrap=settings.kafka_bootstrap,
                          topic=settings.topics.alerts)

    def caller(request: Request, credentials: Annotated[
            HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Caller:
        address = request.client.host if request.client else "unknown"
        wait = throttle.retry_after(address)
        if wait is not None:
            raise HTTPException(429, "too many failed authentications from this address",
                                headers={"Retry-After": str(max(1, math.ceil(wait)))})
        found = tokens.resolve(credentials.credentials) if credentials else None
        if found is None:
            throttle.failed(address)
            log.warning("authentication failed from %s (%s) on %s %s", address,
                        _token_hint(credentials), request.method, request.url.path)
            raise HTTPException(401, "missing or unknown token",
                                headers={"WWW-Authenticate": "Bearer"})
        return Caller(*found)

    def checked(body: SubscriptionIn) -> SubscriptionIn:
        """The webhook allowed, and the zones known to the live rule set (spelled as its
        layers spell them)."""
        for field in ("webhook_url", "ngsi_ld_url"):
            url = getattr(body, field)
            problem = webhooks.check_url(str(url)) if url else None
            if problem is not None:
                invalid(("body", field), problem, str(url))
        spelled, problems = live_zones.check(body.zones)
        if problems:
            invalid(("body", "zones"), "; ".join(problems[:5]), body.zones)
        return body.model_copy(update={"zones": spelled})

    def allowed(roles: frozenset[Role]) -> Any:
        def check(who: Annotated[Caller, Depends(caller)]) -> Caller:
            if who.role not in roles:
                raise HTTPException(403, f"role '{who.role}' may not do this")
            return who
        return Depends(check)

    reader, responder = allowed(READ), allowed(RESPOND)
    pipeline_cache = TimedCache(lambda: broker_status(settings), seconds=15.0)
    api_rules = rule_routes(settings, RuleSetBook(store), reader=reader,
                            proposer=allowed(PROPOSE), admin=allowed(ADMIN))
    api = FastAPI(title="citywatch", version="0.1.0", responses=ALWAYS,
                  docs_url=None, redoc_url=None,
                  description="Incidents, alerts (with lineage), CAP 1.2, team feeds.")
    if settings.api_cors_origins:
        api.add_middleware(CORSMiddleware, allow_origins=settings.api_cors_origins,
                           allow_methods=["GET", "POST", "PUT", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "Last-Event-ID"])
    api.add_middleware(RequestLimits, max_body_bytes=settings.api_max_body_bytes,
                       max_url_bytes=settings.api_max_url_bytes,
                       max_header_bytes=settings.api_max_header_bytes,
                       body_limits={"/rules/proposals": settings.api_max_rules_bytes})
    api.add_middleware(SecurityHeaders, image_origins=tile_origins(settings.console_tiles))
    api.mount("/static", StaticFiles(directory=STATIC), name="static")

    async def store_unavailable(request: Request, exc: Exception) -> JSONResponse:
        reason = store_outage(exc)
        if reason is None:
            raise exc
        log.warning("incident store unavailable (%s): %s %s answered 503", reason,
                    request.method, request.url.path)
        return JSONResponse({"detail": "incident store unavailable; retry later"},
                            status_code=503,
                            headers={"Retry-After": str(RETRY_AFTER_OUTAGE)})

    for error in OUTAGE_ERRORS:
        api.add_exception_handler(error, store_unavailable)

    @api.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": _printable(jsonable_encoder(exc.errors()))},
                            status_code=422)

    api.include_router(api_rules, responses=ERRORS)
    metrics = ApiMetrics(store)
    api.add_middleware(CountRequests, metrics=metrics)

    @api.get("/metrics", response_class=Response,
             responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
    def prometheus_metrics() -> Response:
        """Prometheus metrics: requests answered, incidents by status, alerts stored, the
        newest alert's time (no token needed, like ``/health``: counts only)."""
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @api.get("/docs", include_in_schema=False)
    def docs() -> FileResponse:
        return FileResponse(STATIC / "docs.html")

    @api.get("/redoc", include_in_schema=False)
    def redoc() -> FileResponse:
        """The API reference, also offline (Swagger UI's one-page view of the same
        document)."""
        return FileResponse(STATIC / "docs.html")

    @api.get("/", include_in_schema=False)
    def console() -> FileResponse:
        """The operations console (``static/console``): sign in with a token."""
        return FileResponse(STATIC / "console" / "index.html")

    @api.get("/whoami", responses=ERRORS)
    def whoami(who: Caller = reader) -> dict[str, Any]:
        """Who the token belongs to, its role, what that role may do, and the console's
        settings (tile URL)."""
        return {"name": who.name, "role": who.role,
                "may": sorted(action for action, roles in (("respond", RESPOND),
                                                           ("propose", PROPOSE),
                                                           ("admin", ADMIN))
                              if who.role in roles),
                "tiles": settings.console_tiles}

    @api.get("/zones.geojson", response_class=Response, responses=ERRORS | {200: {
        "content": {"application/geo+json": {}}}})
    def zones_geojson(_: Caller = reader) -> Response:
        """Every zone of the live rule set's layers (the console's base map)."""
        return Response(live_zones.geojson(), media_type="application/geo+json")

    @api.get("/summary", responses=ERRORS)
    async def summary(_: Caller = reader) -> dict[str, Any]:
        """The console's indicators: open incidents by severity and domain, alerts per
        hour over the last 24 h, and from the broker (when configured and reachable) dead
        letters in the last hour and each stage's lag."""
        found = await asyncio.to_thread(console_summary, store)
        pipeline = await asyncio.to_thread(pipeline_cache.get)
        return {**found, "dead_letters_last_hour": pipeline.get("dead_letters_last_hour"),
                "lag": pipeline.get("lag")}
    IncidentId = Annotated[str, Path(max_length=36)]

    def filters(request: Request,
                status: Annotated[list[Status] | None, Query()] = None,
                min_severity: Severity | None = None,
                domain: Annotated[list[Domain] | None, Query()] = None,
                zone: Annotated[list[str] | None, Query(
                    description="zone ids or names (names match without regard to case)")]
                = None,
                bbox: Annotated[str | None, Query(
                    description="min_lon,min_lat,max_lon,max_lat")] = None,
                since: AwareDatetime | None = None, until: AwareDatetime | None = None,
                limit: Annotated[int, Query(ge=1, le=1000)] = 50,
                offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0) -> IncidentFilter:
        known = FILTER_PARAMETERS | ({"close_after"} if request.url.path == "/stream" else set())
        unknown = sorted(set(request.query_params) - known)
        if unknown:
            invalid(("query", unknown[0]), f"unknown query parameter; the filters are "
                    f"{', '.join(sorted(known))}", request.query_params[unknown[0]])
        try:
            box = tuple(float(v) for v in bbox.split(",")) if bbox else None
            if box is not None and len(box) != 4:
                raise ValueError("bbox needs four numbers")
            return IncidentFilter.model_validate({
                "status": status, "min_severity": min_severity, "domain": domain,
                "zone": zone, "bbox": box, "since": since, "until": until, "limit": limit,
                "offset": offset})
        except ValueError as exc:
            invalid(("query", "bbox"), str(exc).splitlines()[-1].strip(), bbox)

    def act(action: Any, incident_id: str, **kwargs: Any) -> Incident:
        try:
            return Incident.model_validate(action(incident_id, **kwargs))
        except IncidentNotFound as exc:
            raise HTTPException(404, str(exc)) from None
        except InvalidTransition as exc:
            raise HTTPException(409, str(exc)) from None

    @api.get("/health", responses={503: {"model": Health}})
    def health(response: Response) -> Health:
        """The store (every endpoint needs it: 503 while it is unavailable) and the broker
        (reported; the API serves without it)."""
        store_status, broker_status = checks.store(), checks.broker()
        if store_status != "ok":
            response.status_code = 503
            response.headers["Retry-After"] = str(RETRY_AFTER_OUTAGE)
        return Health(status="ok" if store_status == "ok" else "unavailable",
                      store=store_status, broker=broker_status)

    @api.get("/incidents", responses=ERRORS)
    def incidents(f: Annotated[IncidentFilter, Depends(filters)],
                  _: Caller = reader) -> IncidentPage:
        rows, total = list_incidents(store, f)
        return IncidentPage(items=[Incident.model_validate(r) for r in rows], total=total,
                            limit=f.limit, offset=f.offset)

    @api.get("/incidents.geojson", responses=ERRORS | {200: {
        "content": {"application/geo+json": {}},
        "description": "The incidents the filters select (a page: limit, offset) as a "
                       "GeoJSON FeatureCollection; X-Total-Count says how many match."}},
        response_class=Response)
    def incidents_geojson(f: Annotated[IncidentFilter, Depends(filters)],
                          _: Caller = reader) -> Response:
        """Incidents as a GIS layer: points at their place with severity, status, times
        and zone as properties (open it in QGIS, ArcGIS or GeoPandas)."""
        rows, total = list_incidents(store, f)
        body = incident_features([Incident.model_validate(r).model_dump() for r in rows])
        return Response(json.dumps(body), media_type="application/geo+json",
                        headers={"X-Total-Count": str(total)})

    @api.get("/incidents/{incident_id}", responses=ERRORS | {404: {"model": Problem}})
    def incident(incident_id: IncidentId, _: Caller = reader) -> IncidentDetail:
        found = get_incident(store, incident_id)
        if found is None:
            raise HTTPException(404, f"incident '{incident_id}' not found")
        return IncidentDetail.model_validate(found, from_attributes=True)

    @api.get("/incidents/{incident_id}/cap", response_class=Response,
             responses=ERRORS | {404: {"model": Problem}, 200: {"content": {CAP_MEDIA: {}}}})
    def incident_cap(incident_id: IncidentId, _: Caller = reader) -> Response:
        found = get_incident(store, incident_id)
        if found is None:
            raise HTTPException(404, f"incident '{incident_id}' not found")
        return Response(cap.incident(found["incident"], found["alerts"]), media_type=CAP_MEDIA)

    mutating = ERRORS | {404: {"model": Problem}, 409: {"model": Problem}}

    @api.post("/incidents/{incident_id}/acknowledge", responses=mutating)
    def acknowledge(incident_id: IncidentId, who: Caller = responder) -> Incident:
        return act(desk.acknowledge, incident_id, actor=who.name)

    @api.post("/incidents/{incident_id}/resolve", responses=mutating)
    def resolve(incident_id: IncidentId, who: Caller = responder) -> Incident:
        return act(desk.resolve, incident_id, actor=who.name)

    @api.post("/incidents/{incident_id}/reopen", responses=mutating)
    def reopen(incident_id: IncidentId, who: Caller = responder) -> Incident:
        return act(desk.reopen, incident_id, actor=who.name)

    @api.post("/incidents/{incident_id}/assign", responses=mutating)
    def assign(incident_id: IncidentId, body: Assignment, who: Caller = responder) -> Incident:
        return act(desk.assign, incident_id, actor=who.name, assignee=body.assignee,
                   team=body.team)

    @api.post("/incidents/{incident_id}/notes", responses=mutating)
    def note(incident_id: IncidentId, body: NoteIn, who: Caller = responder) -> Incident:
        return act(desk.add_note, incident_id, actor=who.name, text=body.text)

    @api.get("/alerts/{alert_id}", responses=ERRORS | {404: {"model": Problem}})
    def alert(alert_id: Annotated[str, Path(max_length=36)], _: Caller = reader) -> Alert:
        row = get_alert(store, alert_id)
        if row is None:
            raise HTTPException(404, f"alert '{alert_id}' not found")
        return Alert.model_validate(row)

    @api.get("/alerts/{alert_id}/explain", responses=ERRORS | {404: {"model": Problem}})
    def explain(alert_id: Annotated[str, Path(max_length=36)],
                format: Literal["json", "prov"] = "json",
                _: Caller = reader) -> dict[str, Any]:
        """Why the alert fired: the rule at its version and who approved it, the source
        events and where they came from, the zone, the values compared, the model, the
        incident and its audit trail (``format=prov``: W3C PROV-JSON)."""
        explained = explain_alert(store, alert_id, configured=settings.rules_path)
        if explained is None:
            raise HTTPException(404, f"alert '{alert_id}' not found")
        return as_prov(explained) if format == "prov" else explained

    @api.get("/alerts/{alert_id}/cap", response_class=Response,
             responses=ERRORS | {404: {"model": Problem}, 200: {"content": {CAP_MEDIA: {}}}})
    def alert_cap(alert_id: Annotated[str, Path(max_length=36)],
                  _: Caller = reader) -> Response:
        row = get_alert(store, alert_id)
        if row is None:
            raise HTTPException(404, f"alert '{alert_id}' not found")
        return Response(cap.alert(row), media_type=CAP_MEDIA)

    admin = allowed(ADMIN)

    @api.get("/tokens", responses=ERRORS)
    def token_list(_: Caller = admin) -> list[TokenInfo]:
        """Every token (admin): name, role, created, last used, expiry, revoked."""
        return [TokenInfo.model_validate(row) for row in tokens.list()]

    @api.post("/tokens", status_code=201, responses=ERRORS | {409: {"model": Problem}})
    def token_issue(body: TokenIn, who: Caller = admin) -> IssuedToken:
        """Issue a token (admin); the secret is in this answer only."""
        until = (datetime.now(UTC) + timedelta(days=body.expires_in_days)
                 if body.expires_in_days else None)
        try:
            secret = tokens.issue(body.name, body.role, actor=who.name, expires_at=until)
        except TokenNameTaken as exc:
            raise HTTPException(409, str(exc)) from None
        return IssuedToken(name=body.name, role=body.role, token=secret, expires_at=until)

    @api.delete("/tokens/{name}", status_code=204,
                responses=ERRORS | {404: {"model": Problem}})
    def token_revoke(name: Annotated[str, Path(max_length=200)],
                     who: Caller = admin) -> Response:
        """Revoke a name's token (admin): refused from the next request on."""
        if not tokens.revoke(name, actor=who.name):
            raise HTTPException(404, f"no valid token named '{name}'")
        return Response(status_code=204)

    @api.get("/subscriptions", responses=ERRORS)
    def subscriptions(team: Annotated[str | None, Query(pattern=TEAM_PATTERN)] = None,
                      _: Caller = reader) -> list[Subscription]:
        return book.list(team)

    @api.post("/subscriptions", status_code=201, responses=ERRORS)
    def create_subscription(body: SubscriptionIn, who: Caller = responder) -> Subscription:
        return book.create(checked(body), actor=who.name)

    @api.get("/subscriptions/{subscription_id}", responses=ERRORS | {404: {"model": Problem}})
    def subscription(subscription_id: Annotated[str, Path(max_length=36)],
                     _: Caller = reader) -> Subscription:
        found = book.get(subscription_id)
        if found is None:
            raise HTTPException(404, f"subscription '{subscription_id}' not found")
        return found

    @api.get("/subscriptions/{subscription_id}/deliveries",
             responses=ERRORS | {404: {"model": Problem}})
    def deliveries(subscription_id: Annotated[str, Path(max_length=36)],
                   status: Annotated[Literal["pending", "delivered", "failed"] | None,
                                     Query()] = None,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                   _: Caller = reader) -> list[DeliveryStatus]:
        """The subscription's deliveries, newest first (``status=failed``: those that
        failed for good, also on the dead-letter topic with stage ``webhook``)."""
        if book.get(subscription_id) is None:
            raise HTTPException(404, f"subscription '{subscription_id}' not found")
        return [DeliveryStatus.model_validate(row)
                for row in outbox.list(subscription_id, status, limit)]

    @api.put("/subscriptions/{subscription_id}", responses=ERRORS | {404: {"model": Problem}})
    def replace_subscription(subscription_id: Annotated[str, Path(max_length=36)],
                             body: SubscriptionIn, who: Caller = responder) -> Subscription:
        found = book.replace(subscription_id, checked(body), actor=who.name)
        if found is None:
            raise HTTPException(404, f"subscription '{subscription_id}' not found")
        return found

    @api.delete("/subscriptions/{subscription_id}", status_code=204,
                responses=ERRORS | {404: {"model": Problem}})
    def delete_subscription(subscription_id: Annotated[str, Path(max_length=36)],
                            who: Caller = responder) -> Response:
        if not book.delete(subscription_id, actor=who.name):
            raise HTTPException(404, f"subscription '{subscription_id}' not found")
        return Response(status_code=204)

    @api.post("/subscriptions/{subscription_id}/feed-key", status_code=201,
              responses=ERRORS | {404: {"model": Problem}})
    def issue_feed_key(request: Request,
                       subscription_id: Annotated[str, Path(max_length=36)],
                       who: Caller = responder) -> FeedUrl:
        """A secret feed URL for the subscription's Atom feed, for feed readers that
        cannot send a token; shown in this answer only; a new one replaces the old."""
        secret = book.issue_feed_key(subscription_id, actor=who.name)
        if secret is None:
            raise HTTPException(404, f"subscription '{subscription_id}' not found")
        return FeedUrl(feed_url=f"{str(request.base_url).rstrip('/')}/feeds/key/"
                                f"{secret}.atom")

    @api.delete("/subscriptions/{subscription_id}/feed-key", status_code=204,
                responses=ERRORS | {404: {"model": Problem}})
    def revoke_feed_key(subscription_id: Annotated[str, Path(max_length=36)],
                        who: Caller = responder) -> Response:
        """The secret feed URL stops working at once."""
        if not book.revoke_feed_key(subscription_id, actor=who.name):
            raise HTTPException(404, f"subscription '{subscription_id}' has no feed URL")
        return Response(status_code=204)

    @api.get("/feeds/key/{secret}.atom", response_class=Response,
             responses={404: {"model": Problem},
                        200: {"content": {"application/atom+xml": {}}}})
    def keyed_feed(request: Request, secret: Annotated[str, Path(max_length=100)],
                   ) -> Response:
        """A subscription's Atom feed through its secret URL (no token)."""
        sub = book.by_feed_key(secret)
        if sub is None:
            raise HTTPException(404, "no feed at this URL (revoked, or never issued)")
        return _atom(request, sub.team, [sub])

    def _atom(request: Request, team: str, subs: list[Subscription]) -> Response:
        alerts: dict[str, Any] = {}
        for sub in subs:
            for row in recent_alerts(store, domains=list(sub.domains),
                                     categories=list(sub.categories), zones=sub.zones,
                                     min_severity=sub.min_severity):
                alerts[row.id] = row
        newest = sorted(alerts.values(), key=lambda a: (a.raised_at, a.id), reverse=True)[:100]
        body = atom_feed(team, newest, cap.alert, base_url=str(request.base_url).rstrip("/"))
        return Response(body, media_type="application/atom+xml")

    @api.get("/feeds/{team}.atom", response_class=Response,
             responses=ERRORS | {404: {"model": Problem},
                                 200: {"content": {"application/atom+xml": {}}}})
    def feed(request: Request, team: Annotated[str, Path(pattern=TEAM_PATTERN)],
             _: Caller = reader) -> Response:
        """The newest alerts (at most 100) any of the team's active subscriptions match;
        404 for a team with none."""
        subs = book.list(team, active_only=True)
        if not subs:
            raise HTTPException(404, f"team '{team}' has no active subscription")
        return _atom(request, team, subs)

    @api.get("/stream", response_class=StreamingResponse,
             responses=ERRORS | {200: {"content": {"text/event-stream": {}}}})
    async def stream(request: Request, f: Annotated[IncidentFilter, Depends(filters)],
                     close_after: Annotated[float | None, Query(
                         gt=0, le=86400, description="close the stream after N seconds")]
                     = None, _: Caller = reader) -> StreamingResponse:
        """Server-Sent Events: every change to an incident matching the filter (event
        ``incident``, its data the incident as it is now), in commit order. The event id
        is the change id: reconnect with ``Last-Event-ID`` to resume after it, with no
        change skipped or repeated; without it the stream starts with the next change."""
        last_id = request.headers.get("last-event-id", "").strip()
        cursor = int(last_id) if last_id.isdecimal() else await asyncio.to_thread(
            last_change_id, store)
        return StreamingResponse(_events(request, f, cursor, close_after),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    async def _events(request: Request, f: IncidentFilter, cursor: int,
                      close_after: float | None) -> AsyncIterator[str]:
        deadline = time.monotonic() + close_after if close_after else None
        quiet_since = time.monotonic()
        yield ": citywatch incident stream\n\n"
        while deadline is None or time.monotonic() < deadline:
            if await request.is_disconnected():
                return
            before = cursor
            try:
                cursor, changes = await asyncio.to_thread(incident_changes, store,
                                                          after=cursor, f=f)
            except OUTAGE_ERRORS as exc:
                if store_outage(exc) is None:
                    raise
                yield ": incident store unavailable, retrying\n\n"
                await asyncio.sleep(RETRY_AFTER_OUTAGE)
                continue
            for change, row in changes:
                item = Incident.model_validate(row)
                yield (f"id: {change}\nevent: incident\n"
                       f"data: {json.dumps(item.model_dump(mode='json'))}\n\n")
                quiet_since = time.monotonic()
            if time.monotonic() - quiet_since > 15:
                yield ": keep-alive\n\n"
                quiet_since = time.monotonic()
            if cursor == before:  # caught up
                await asyncio.sleep(settings.stream_poll_seconds)

    return api
