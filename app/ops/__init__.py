"""Operations: the RQ dashboard at `/ops/rq`, the funnel page at `/ops/funnel`,
`/metrics`, and a JSON log line per request (`GET /api/funnel` is in `app.api`).

`init_ops(app)` wires it all into the app built by `create_app`. Everything
under `/ops` (and `/metrics` unless METRICS_PUBLIC=1) needs the ops token:
see `app.ops.auth`.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, Flask, render_template, request

from app.api import funnel as funnel_api
from app.ops.auth import require_ops_auth
from app.ops.metrics_view import install_metrics
from app.ops.request_log import install_request_logging
from app.ops.rq import URL_PREFIX as RQ_URL_PREFIX
from app.ops.rq import mount_rq_dashboard
from codat_authflow.funnel.compute import STEPS, Funnel

bp = Blueprint("ops", __name__, url_prefix="/ops", template_folder="templates")
bp.before_request(require_ops_auth)

CHART_WIDTH = 640
BAR_HEIGHT = 34
BAR_GAP = 14
LABEL_WIDTH = 90


def init_ops(app: Flask) -> None:
    install_request_logging(app)
    install_metrics(app)
    mount_rq_dashboard(app)
    # Before the dashboard's own hooks: nothing of it runs unauthenticated.
    app.before_request_funcs.setdefault("rq_dashboard", []).insert(0, require_ops_auth)
    app.register_blueprint(bp)


@bp.get("/")
def index():
    return render_template("ops/index.html", rq_url=RQ_URL_PREFIX + "/")


def chart(funnel: Funnel) -> dict:
    """Geometry of the server-rendered SVG bar chart (no script, no CDN)."""
    start = max(funnel.step("created").companies, 1)
    bars = []
    for index, step in enumerate(funnel.steps):
        width = round((CHART_WIDTH - LABEL_WIDTH - 150) * step.companies / start, 1)
        bars.append(
            {
                "label": step.step,
                "y": index * (BAR_HEIGHT + BAR_GAP),
                "width": max(width, 1 if step.companies else 0),
                "companies": step.companies,
                "percent": (
                    f"{step.conversion_from_start * 100:.0f}%"
                    if step.conversion_from_start is not None
                    else "-"
                ),
            }
        )
    height = len(bars) * (BAR_HEIGHT + BAR_GAP)
    return {
        "bars": bars,
        "width": CHART_WIDTH,
        "height": height,
        "bar_height": BAR_HEIGHT,
        "label_width": LABEL_WIDTH,
    }


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio * 100:.1f}%"


@bp.get("/funnel")
def funnel_page():
    args = request.args.to_dict()
    try:
        query = funnel_api.parse_query(args)
    except funnel_api.FunnelQueryError as exc:
        return render_template("ops/funnel.html", error=str(exc), args=args, funnel=None), 400
    funnel = funnel_api.compute(query)
    return render_template(
        "ops/funnel.html",
        error=None,
        args={
            "from": query.since.strftime("%Y-%m-%d"),
            "to": args.get("to") or "",
            "sourceType": query.source_type or "",
        },
        query=query,
        funnel=funnel,
        chart=chart(funnel),
        steps=STEPS,
        duration=_duration,
        percent=_percent,
        generated_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    )
