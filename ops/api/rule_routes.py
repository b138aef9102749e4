"""The rule-governance part of the responder API (no ``from __future__ import
annotations``: FastAPI reads the route annotations at runtime).

``GET /rules`` (the live version, what each worker runs, pending proposals),
``GET /rules/versions/{version}``, ``GET /rules/diff``; ``POST /rules/proposals``
(analyst or admin), ``POST /rules/versions/{version}/approve|reject|rollback`` (admin;
the proposer may not decide on their own proposal: 403). The same book as the CLI's
``citywatch rules`` commands, so both are audited alike.

Example:
    >>> router = rule_routes(Settings(), book, reader=r, proposer=p, admin=a)  # doctest: +SKIP
"""

import tempfile
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, HTTPException, Query
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError

from citywatch.ops.api.models import (
    Problem,
    RuleDecisionIn,
    RuleDiff,
    RuleLayer,
    RuleProposalIn,
    RulesStatus,
    RuleVersion,
    WorkerRules,
)
from citywatch.ops.rule_checks import check_rules
from citywatch.ops.settings import Settings
from citywatch.ops.store.rulesets import (
    DecisionRefused,
    RuleSetBook,
    UnknownVersion,
    UnloadableRuleSet,
    diff_versions,
)
from citywatch.rules.loader import RuleSetError, document_problems

VersionId = Annotated[str, PathParam(pattern=r"^[0-9a-z]{1,32}$")]
REFUSED: dict[int | str, dict[str, Any]] = {404: {"model": Problem}, 409: {"model": Problem}}


def rule_routes(settings: Settings, book: RuleSetBook, *, reader: Any, proposer: Any,
                admin: Any) -> APIRouter:
    """The routes, with ``reader``/``proposer``/``admin`` the role dependencies."""
    router = APIRouter(prefix="/rules", tags=["rules"])

    def decided(action: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return action(*args, **kwargs)
        except DecisionRefused as exc:
            status = 403 if "different person" in str(exc) else 409
            raise HTTPException(status, str(exc)) from None
        except UnknownVersion as exc:
            raise HTTPException(404, str(exc)) from None

    def as_version(version: str) -> RuleVersion:
        live = book.current()
        history = {a.version for a in book.history()}
        proposal = book.proposal(version)
        found = book.version(version)
        if found is None:
            raise HTTPException(404, f"no rule set version {version}")
        status = ("live" if live and live.version == version else
                  "was live" if version in history else proposal.status if proposal
                  else "was live")
        return RuleVersion(
            version=version, status=status, content=found.content,
            layers=[RuleLayer.model_validate(layer, from_attributes=True)
                    for layer in found.layers],
            proposed_by=proposal.proposed_by if proposal else found.applied_by,
            decided_by=proposal.decided_by if proposal else None,
            reason=proposal.reason if proposal else None,
            findings=proposal.findings if proposal else [])

    @router.get("")
    def status(_: Any = reader) -> RulesStatus:
        live = book.current()
        seen = timedelta(seconds=max(10.0, 5 * settings.rules_poll_seconds))
        return RulesStatus(
            live=live.version if live else None,
            live_since=live.applied_at if live else None,
            applied_by=live.applied_by if live else None,
            workers=[WorkerRules.model_validate(w) for w in book.workers(seen)],
            proposed=[p.version for p in book.proposals("proposed")])

    @router.get("/versions/{version}", responses={404: {"model": Problem}})
    def show(version: VersionId, _: Any = reader) -> RuleVersion:
        return as_version(version)

    @router.get("/diff", responses={404: {"model": Problem}})
    def diff(old: Annotated[str, Query(pattern=r"^[0-9a-z]{1,32}$")],
             new: Annotated[str, Query(pattern=r"^[0-9a-z]{1,32}$")],
             _: Any = reader) -> RuleDiff:
        a, b = book.version(old), book.version(new)
        if a is None or b is None:
            raise HTTPException(404, f"no rule set version {old if a is None else new}")
        return RuleDiff.model_validate(diff_versions(a, b))

    @router.post("/proposals", status_code=201,
                 responses={422: {"model": Problem}, 409: {"model": Problem}})
    def propose(body: RuleProposalIn, who: Any = proposer) -> RuleVersion:
        with tempfile.TemporaryDirectory(prefix="citywatch-proposal-") as scratch:
            path = _write_proposal(Path(scratch), body, book)
            report = check_rules(path, settings)
            if not report.ok:
                raise RequestValidationError([
                    {"type": "value_error", "loc": ("body", "rules"),
                     "msg": e.replace(str(path), "rules.yaml"), "input": None}
                    for e in report.errors])
            try:
                proposal = book.propose(path, actor=who.name,
                                        findings=[str(f).replace(str(path), "rules.yaml")
                                                  for f in report.findings])
            except (RuleSetError, UnloadableRuleSet) as exc:
                raise RequestValidationError([
                    {"type": "value_error", "loc": ("body", "rules"),
                     "msg": str(exc).replace(str(path), "rules.yaml"), "input": None}]
                ) from None
        return as_version(proposal.version)

    @router.post("/versions/{version}/approve", responses=REFUSED)
    def approve(version: VersionId, who: Any = admin) -> RuleVersion:
        decided(book.approve, version, actor=who.name)
        return as_version(version)

    @router.post("/versions/{version}/reject", responses=REFUSED)
    def reject(version: VersionId, body: RuleDecisionIn, who: Any = admin) -> RuleVersion:
        decided(book.reject, version, actor=who.name, reason=body.reason)
        return as_version(version)

    @router.post("/versions/{version}/rollback", responses=REFUSED)
    def rollback(version: VersionId, who: Any = admin) -> RuleVersion:
        decided(book.rollback, version, actor=who.name)
        return as_version(version)

    return router


def _write_proposal(folder: Path, body: RuleProposalIn, book: RuleSetBook) -> Path:
    """The proposal as files in ``folder``: the rule text and each layer it names, from
    the upload or else from the live version's layer file of the same name."""
    path = folder / "rules.yaml"
    path.write_text(body.rules, encoding="utf-8")
    if document_problems(body.rules, path):
        return path  # validation reports it
    try:
        data = yaml.safe_load(body.rules)
    except yaml.YAMLError:
        return path
    live = book.current()
    stored = {layer.name: layer for layer in (live.layers if live else ())}
    for kind in ("zones", "sites"):
        for spec in (data.get(kind) or []) if isinstance(data, dict) else []:
            relative = PurePosixPath(str(spec.get("path", ""))) if isinstance(spec, dict) \
                else None
            if relative is None or relative.is_absolute() or ".." in relative.parts \
                    or not relative.name:
                continue
            target = folder / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            text = body.layers.get(str(relative), body.layers.get(relative.name))
            if text is not None:
                target.write_text(text, encoding="utf-8")
            elif relative.name in stored and live is not None:
                target.write_bytes(book.layer_bytes(stored[relative.name].sha256))
    return path
