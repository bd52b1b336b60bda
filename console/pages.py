"""``/console``: server-rendered pages for a person on call, signed in with CONSOLE_PASSWORD.

Views read through ``console.reads`` and ``workers.queries`` and render Jinja templates with
autoescaping on: whatever a payload holds is shown as text. Every POST checks the session's
CSRF token; Replay goes the API's way (``api.replay_one``).
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from schemas.broker import queue_depths
from schemas.callbacks import kinds
from workers import queries
from workers.store import audit

from . import actions, charts, reads, security
from .api import replay_one
from .cursor import BadCursor
from .params import (
    ALERT_ARGS,
    CONVERSATION_ARGS,
    CONVERSATION_STATUSES,
    DELIVERY_ARGS,
    DELIVERY_STATUSES,
    EVENT_ARGS,
    EVENT_STATUSES,
    MAX_LIMIT,
    ROW_ID,
    SEVERITIES,
    BadArgs,
    parse,
)

bp = Blueprint(
    "pages",
    __name__,
    url_prefix="/console",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

OPEN_ENDPOINTS = frozenset({"pages.login", "pages.static"})


def console() -> Any:
    return current_app.extensions["console"]


@bp.before_request
def guard() -> Response | None:
    if not console().settings.console_password:
        abort(404)  # no CONSOLE_PASSWORD: the console is off, as if it did not exist
    if request.method == "POST" and not security.csrf_valid(request):
        abort(400, description="the form's CSRF token is missing or stale; reload the page")
    if request.endpoint in OPEN_ENDPOINTS or session.get("signed_in"):
        return None
    return redirect(url_for("pages.login", next=request.full_path.rstrip("?")))


@bp.app_context_processor
def template_helpers() -> dict[str, Any]:
    return {
        "csrf_token": security.csrf_token,
        "pretty": pretty_json,
        "age": age,
        "query_args": query_args,
    }


def query_args(args: dict[str, Any]) -> dict[str, str]:
    """Parsed filters back into a link's query string (the next page's)."""
    return {
        key: value.isoformat() if isinstance(value, datetime) else str(value)
        for key, value in args.items()
        if value is not None and value != ""
    }


def pretty_json(value: Any) -> str:
    """A raw body or a JSON value, indented for reading (the template escapes it)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value  # kept as sent
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


# --- signing in -------------------------------------------------------------------------------


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | str:
    if request.method == "GET":
        return render_template("login.html", next=request.args.get("next", ""))
    address = request.remote_addr or "unknown"
    wait = console().throttle.blocked_for(address)
    if wait:
        html = render_template("login.html", error=f"Too many tries; wait {wait} s.", next="")
        return Response(html, status=429, headers={"Retry-After": str(wait)})
    if not security.password_matches(console().settings, request.form.get("password", "")):
        console().throttle.failed(address)
        audit.record(console().store, "console", "sign-in", None, "refused")
        html = render_template("login.html", error="Wrong password.", next="")
        return Response(html, status=401)
    console().throttle.succeeded(address)
    session.clear()  # a fresh session (and CSRF token) once signed in
    session["signed_in"] = True
    # Names this session in the audit trail: its sign-in and each of its actions.
    session["who"] = secrets.token_hex(4)
    session.permanent = True
    audit.record(console().store, actor(), "sign-in")
    return redirect(_local(request.form.get("next")) or url_for("pages.overview"))


def actor() -> str:
    """This session in the audit trail (one password, so a session is who there is)."""
    return f"console:{session.get('who', '?')}"


def _local(target: str | None) -> str | None:
    """Only a path of this console: never send a person signing in anywhere else."""
    if target and target.startswith("/console") and not target.startswith("//"):
        return target
    return None


@bp.post("/logout")
def logout() -> Response:
    session.clear()
    return redirect(url_for("pages.login"))


# --- reading ----------------------------------------------------------------------------------


@bp.get("/")
def overview() -> str:
    with console().store.session() as s:
        stats = reads.overview(s)
    depths = queue_depths(console().redis)
    spool = spool_size(console().settings.spool_dir)
    return render_template(
        "overview.html", stats=stats, depths=depths, spool=spool, statuses=EVENT_STATUSES
    )


@bp.get("/charts")
def charts_page() -> str:
    now = datetime.now(UTC)
    with console().store.session() as s:
        per_minute = charts.events_per_minute(s, now)
        latency = charts.processing_latency(s, now)
        destinations = charts.deliveries_by_destination(s)
    return render_template(
        "charts.html",
        per_minute=per_minute,
        latency=latency,
        destinations=destinations,
        depths=queue_depths(console().redis),
        hours=charts.HOURS + 1,  # the hours the latency chart has room for
    )


def spool_size(directory: str) -> int | None:
    """Events in this host's spool (the receiver's SPOOL_DIR): ``*.event`` files."""
    from pathlib import Path

    try:
        return sum(1 for p in Path(directory).iterdir() if p.name.endswith(".event"))
    except OSError:
        return None


@bp.get("/events")
def events() -> Response | str:
    wanted = request.args.get("q", "").strip()
    if wanted:
        with console().store.session() as s:
            found = reads.find_id(s, wanted)
        if found is None:
            flash(f"Nothing has the id {wanted}.", "warning")
        else:
            return redirect(_place_of(*found))
    return _listing(
        "events.html",
        reads.events_page,
        EVENT_ARGS,
        statuses=EVENT_STATUSES,
        kinds=kinds(),
        resource_kinds=queries.resource_models(),
    )


def _place_of(kind: str, found_id: str) -> str:
    if kind == "event":
        return url_for("pages.event", event_id=found_id)
    if kind == "conversation":
        return url_for("pages.conversation", conversation_id=found_id)
    return url_for("pages.resource", kind=kind, resource_id=found_id)


def _listing(template: str, reader: Any, schema: Any, **context: Any) -> str:
    """A page of rows under its filter form: ``template`` given the page, the filters and
    their errors, and ``context``."""
    args, errors, page = _page(reader, schema)
    return render_template(template, page=page, args=args, errors=errors, **context)


def _page(reader: Any, schema: Any) -> tuple[dict[str, Any], dict[str, Any], reads.Page]:
    """Parse the filters; a bad one is shown beside the form instead of failing the page."""
    try:
        args = parse(schema, request.args)
    except BadArgs as exc:
        return dict(request.args), exc.messages, reads.Page([], None)
    with console().store.session() as s:
        try:
            return args, {}, reader(s, args)
        except BadCursor as exc:
            return args, {"cursor": [str(exc)]}, reads.Page([], None)


@bp.get("/events/<event_id>")
def event(event_id: str) -> str:
    with console().store.session() as s:
        record = reads.event_record(s, event_id)
    if record is None:
        abort(404, description=f"no event {event_id}")
    return render_template("event.html", event=record)


@bp.post("/events/<event_id>/replay")
def replay(event_id: str) -> Response:
    done = replay_one(event_id)
    audit.record(console().store, actor(), "replay", f"event:{event_id}", _did(done))
    if done is None:
        abort(404, description=f"no event {event_id}")
    flash(f"Event {event_id} replayed (was {done.was}); it is queued again.", "success")
    return redirect(url_for("pages.event", event_id=event_id))


@bp.get("/conversations")
def conversations() -> str:
    return _listing(
        "conversations.html",
        reads.conversations_page,
        CONVERSATION_ARGS,
        statuses=CONVERSATION_STATUSES,
    )


@bp.get("/conversations/<conversation_id>")
def conversation(conversation_id: str) -> str:
    with console().store.session() as s:
        record = queries.conversation_record(s, conversation_id)
        alerts = reads.conversation_alerts(s, conversation_id)
    if record is None:
        abort(404, description=f"no conversation {conversation_id}")
    return render_template(
        "conversation.html", convo=record, alerts=alerts, timeline=reads.timeline(record["events"])
    )


@bp.post("/conversations/<conversation_id>/erase")
def erase_conversation(conversation_id: str) -> Response:
    """Erase, once the id was typed again: a click alone must not destroy a conversation."""
    if request.form.get("confirm", "").strip() != conversation_id:
        flash("Nothing erased: type the conversation's id to confirm.", "error")
        return redirect(url_for("pages.conversation", conversation_id=conversation_id))
    done = actions.erase(console(), "conversation", conversation_id, actor())
    flash(f"Conversation {conversation_id} erased: {done['rows']} rows.", "success")
    return redirect(url_for("pages.conversations"))


# /replicas/<id>, /videos/<id>, /documents/<id>: every kind with a record of its own.
@bp.get(f"/<any({', '.join(queries.resource_models())}):kind>s/<resource_id>")
def resource(kind: str, resource_id: str) -> str:
    with console().store.session() as s:
        record = queries.resource_record(s, kind, resource_id)
    if record is None:
        abort(404, description=f"no {kind} {resource_id}")
    events_url = url_for("pages.events", resource=resource_id)
    return render_template("resource.html", kind=kind, record=record, events_url=events_url)


@bp.get("/audit")
def audit_page() -> str:
    """Who did what: replays, redeliveries, erasures, purges, sign-ins (newest first)."""
    with console().store.session() as s:
        entries = audit.entries(s, limit=500)
    return render_template("audit.html", entries=entries)


@bp.get("/alerts")
def alerts() -> str:
    return _listing("alerts.html", reads.alerts_page, ALERT_ARGS, severities=SEVERITIES)


@bp.get("/deliveries")
def deliveries() -> str:
    """Deliveries to the user's destinations, failed first; then failed alert deliveries."""
    args, errors, page = _page(reads.deliveries_page, DELIVERY_ARGS)
    failed = failed_alerts = None
    if not args.get("status") and not args.get("cursor") and not errors:
        with console().store.session() as s:
            failed = reads.deliveries_page(s, {"status": "failed", "limit": MAX_LIMIT}).data
            failed_alerts = reads.alert_deliveries_page(
                s, {"status": "failed", "limit": MAX_LIMIT}
            ).data
    return render_template(
        "deliveries.html",
        page=page,
        args=args,
        errors=errors,
        failed=failed,
        failed_alerts=failed_alerts,
        statuses=DELIVERY_STATUSES,
    )


@bp.app_template_filter("when")
def when(value: str | None) -> str:
    """An ISO time as people read it, in UTC, to the second."""
    if not value:
        return "-"
    try:
        moment = datetime.fromisoformat(value).astimezone(UTC)
    except ValueError:
        return value
    return moment.strftime("%Y-%m-%d %H:%M:%S")


@bp.post(f"/deliveries/<{ROW_ID}:delivery_id>/redeliver")
def redeliver(delivery_id: int) -> Response:
    with console().store.session() as s:
        done = actions.redeliver(s, console().settings, delivery_id, console().tasks.send)
    audit.record(console().store, actor(), "redeliver", f"delivery:{delivery_id}", _did(done))
    if not done:
        abort(404, description=f"no delivery {delivery_id}")
    flash(f"Delivery {delivery_id} queued again.", "success")
    return redirect(url_for("pages.deliveries"))


@bp.post("/deliveries/redeliver")
def redeliver_failed() -> Response:
    """Bulk Redeliver: every failed delivery to a destination, and every failed alert one."""
    with console().store.session() as s:
        done = actions.redeliver_failed(s, console().settings, console().tasks.send)
    with console().store.session() as s:
        alert_ids = actions.failed_alert_deliveries(s, limit=1000)
    for delivery_id in alert_ids:
        with console().store.session() as s:
            done += actions.redeliver_alert(s, delivery_id, console().tasks.send)
    audit.record(console().store, actor(), "redeliver", "failed deliveries", _did(done), count=done)
    flash(f"{done} failed deliveries queued again.", "success")
    return redirect(url_for("pages.deliveries"))


@bp.post(f"/alert-deliveries/<{ROW_ID}:delivery_id>/redeliver")
def redeliver_alert(delivery_id: int) -> Response:
    with console().store.session() as s:
        done = actions.redeliver_alert(s, delivery_id, console().tasks.send)
    audit.record(console().store, actor(), "redeliver", f"alert-delivery:{delivery_id}", _did(done))
    if done:
        flash(f"Alert delivery {delivery_id} queued again.", "success")
    else:
        flash(f"Alert delivery {delivery_id} is not a failed delivery.", "warning")
    return redirect(url_for("pages.deliveries"))


def _did(done: Any) -> str:
    return "done" if done else "nothing"
