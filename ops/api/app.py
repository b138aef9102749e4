"""The responder API (no ``from __future__ import annotations``: FastAPI reads the
annotations of the route closures at runtime).


Token authentication (``Authorization: Bearer <token>``) with roles: ``viewer`` reads;
``operator`` also acknowledges, resolves, reopens, assigns, notes and manages
subscriptions; ``analyst`` reads (rules and backtests to come); ``admin`` may do
everything. A missing or unknown token gets 401, a role that may not act gets 403.

Example:
    >>> from fastapi.testclient import TestClient       # doctest: +SKIP
    >>> client = TestClient(create_api(Settings()))     # doctest: +SKIP
    >>> client.get("/health").json()                    # doctest: +SKIP
    {'status': 'ok'}
"""


import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AwareDatetime

from citywatch.ops.api.atom import atom_feed
from citywatch.ops.api.models import (
    Alert,
    Assignment,
    DeliveryStatus,
    Incident,
    IncidentDetail,
    IncidentPage,
    NoteIn,
    Problem,
)
from citywatch.ops.cap import CapWriter
from citywatch.ops.settings import Settings
from citywatch.ops.store.changes import incident_changes, last_change_id
from citywatch.ops.store.lifecycle import IncidentDesk, IncidentNotFound, InvalidTransition
from citywatch.ops.store.outbox import Outbox
from citywatch.ops.store.queries import (
    IncidentFilter,
    get_alert,
    get_incident,
    list_incidents,
    recent_alerts,
)
from citywatch.ops.store.store import IncidentStore
from citywatch.ops.store.subscriptions import SubscriptionBook
from citywatch.ops.store.tokens import Role, TokenBook
from citywatch.rules.engine import build_zone_index
from citywatch.rules.loader import load_ruleset
from citywatch.streams.subscriptions import TEAM_PATTERN, Subscription, SubscriptionIn

READ: frozenset[Role] = frozenset({"viewer", "operator", "analyst", "admin"})
RESPOND: frozenset[Role] = frozenset({"operator", "admin"})
CAP_MEDIA = "application/cap+xml"
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "missing or unknown token"},
    403: {"model": Problem, "description": "role may not do this"},
}


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
    cap = CapWriter(settings.cap_sender, build_zone_index(ruleset))
    bearer = HTTPBearer(auto_error=False)

    def caller(credentials: Annotated[HTTPAuthorizationCredentials | None,
                                      Depends(bearer)]) -> Caller:
        found = tokens.resolve(credentials.credentials) if credentials else None
        if found is None:
            raise HTTPException(401, "missing or unknown token",
                                headers={"WWW-Authenticate": "Bearer"})
        return Caller(*found)

    def allowed(roles: frozenset[Role]) -> Any:
        def check(who: Annotated[Caller, Depends(caller)]) -> Caller:
            if who.role not in roles:
                raise HTTPException(403, f"role '{who.role}' may not do this")
            return who
        return Depends(check)

    reader, responder = allowed(READ), allowed(RESPOND)
    api = FastAPI(title="citywatch", version="0.1.0",
                  description="Incidents, alerts (with lineage), CAP 1.2, team feeds.")

    @api.middleware("http")
    async def refuse_nul(request: Request, call_next: Any) -> Response:
        """PostgreSQL cannot store or compare text with NUL characters: refuse them in
        the URL up front (bodies are checked by their models)."""
        query = request.scope.get("query_string", b"").lower()
        if "\x00" in request.scope.get("path", "") or b"%00" in query or b"\x00" in query:
            return JSONResponse({"detail": "NUL characters are not allowed in the URL"},
                                status_code=422)
        return await call_next(request)
    IncidentId = Annotated[str, Path(max_length=36)]

    def filters(status: Annotated[list[str] | None, Query()] = None,
                min_severity: str | None = None,
                domain: Annotated[list[str] | None, Query()] = None,
                zone: Annotated[list[str] | None, Query()] = None,
                bbox: Annotated[str | None, Query(
                    description="min_lon,min_lat,max_lon,max_lat")] = None,
                since: AwareDatetime | None = None, until: AwareDatetime | None = None,
                limit: Annotated[int, Query(ge=1, le=1000)] = 50,
                offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0) -> IncidentFilter:
        try:
            box = tuple(float(v) for v in bbox.split(",")) if bbox else None
            if box is not None and len(box) != 4:
                raise ValueError("bbox needs four numbers")
            return IncidentFilter.model_validate({
                "status": status, "min_severity": min_severity, "domain": domain,
                "zone": zone, "bbox": box, "since": since, "until": until, "limit": limit,
                "offset": offset})
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None

    def act(action: Any, incident_id: str, **kwargs: Any) -> Incident:
        try:
            return Incident.model_validate(action(incident_id, **kwargs))
        except IncidentNotFound as exc:
            raise HTTPException(404, str(exc)) from None
        except InvalidTransition as exc:
            raise HTTPException(409, str(exc)) from None

    @api.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @api.get("/incidents", responses=ERRORS)
    def incidents(f: Annotated[IncidentFilter, Depends(filters)],
                  _: Caller = reader) -> IncidentPage:
        rows, total = list_incidents(store, f)
        return IncidentPage(items=[Incident.model_validate(r) for r in rows], total=total,
                            limit=f.limit, offset=f.offset)

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

    @api.get("/alerts/{alert_id}/cap", response_class=Response,
             responses=ERRORS | {404: {"model": Problem}, 200: {"content": {CAP_MEDIA: {}}}})
    def alert_cap(alert_id: Annotated[str, Path(max_length=36)],
                  _: Caller = reader) -> Response:
        row = get_alert(store, alert_id)
        if row is None:
            raise HTTPException(404, f"alert '{alert_id}' not found")
        return Response(cap.alert(row), media_type=CAP_MEDIA)

    @api.get("/subscriptions", responses=ERRORS)
    def subscriptions(team: Annotated[str | None, Query(pattern=TEAM_PATTERN)] = None,
                      _: Caller = reader) -> list[Subscription]:
        return book.list(team)

    @api.post("/subscriptions", status_code=201, responses=ERRORS)
    def create_subscription(body: SubscriptionIn, who: Caller = responder) -> Subscription:
        return book.create(body, actor=who.name)

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
        found = book.replace(subscription_id, body, actor=who.name)
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

    @api.get("/feeds/{team}.atom", response_class=Response,
             responses=ERRORS | {200: {"content": {"application/atom+xml": {}}}})
    def feed(request: Request, team: Annotated[str, Path(pattern=TEAM_PATTERN)],
             _: Caller = reader) -> Response:
        alerts: dict[str, Any] = {}
        for sub in book.list(team, active_only=True):
            for row in recent_alerts(store, domains=list(sub.domains),
                                     categories=list(sub.categories), zones=sub.zones,
                                     min_severity=sub.min_severity):
                alerts[row.id] = row
        newest = sorted(alerts.values(), key=lambda a: (a.raised_at, a.id), reverse=True)[:100]
        body = atom_feed(team, newest, cap.alert, base_url=str(request.base_url).rstrip("/"))
        return Response(body, media_type="application/atom+xml")

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
            cursor, changes = await asyncio.to_thread(incident_changes, store,
                                                      after=cursor, f=f)
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
