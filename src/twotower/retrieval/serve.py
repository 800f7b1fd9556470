"""``twotower serve``: the recommendation service over HTTP (FastAPI, run by uvicorn).

Endpoints (the OpenAPI schema is at ``/openapi.json``, interactive docs at ``/docs``):

- ``GET /health``: model, checkpoint hash, catalog size, serving day, users known, index;
- ``GET /recommend?user_id=&k=&hour=``: the top k of a user with a play in the lookback window before the
  serving day (seen items excluded); 404 for any other user, saying to POST their history;
- ``POST /recommend`` ``{"user_id": optional, "history": [{"item_id", "watch_fraction", "timestamp"
  optional, "like"/"share"/"follow"/"comment" optional}], "k": optional, "hour": optional}``: the top k
  for a user given by their recent plays (``new_user.py`` has the rules), the given items excluded.

Every bad request (unknown user without a history, unknown item ids, k out of range, malformed JSON, wrong
types) is answered 4xx with ``{"detail": "<one line>"}`` (validation errors add ``errors``: FastAPI's
list), never 500. Recommendations come as JSON text assembled from item metadata encoded once at start-up
(the response models document them; FastAPI does not re-validate what the endpoints return).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from twotower.retrieval.new_user import Plays
from twotower.retrieval.service import Recommender, RequestError

MAX_HISTORY = 10_000
INT64 = {"ge": -(2**63), "le": 2**63 - 1}  # ids beyond int64 are a 422, not an overflow
FLAGS = ("like", "share", "follow", "comment")


class Play(BaseModel):
    """One play of the user's recent history."""

    model_config = ConfigDict(extra="forbid")
    item_id: int = Field(description="A catalog item id.", **INT64)
    watch_fraction: float = Field(ge=0, allow_inf_nan=False, description="Watch time / duration (> 1: replays).")
    timestamp: dt.datetime | None = Field(
        None, description="When it was played (ISO 8601 or Unix seconds); give it for every play or for none."
    )
    like: bool = False
    share: bool = False
    follow: bool = False
    comment: bool = False


class HistoryRequest(BaseModel):
    """A user the service has not seen, given by their recent plays (oldest first when no timestamps)."""

    model_config = ConfigDict(extra="forbid")
    user_id: int | None = Field(None, description="Optional: used for the id embedding and static features if known.", **INT64)
    history: list[Play] = Field(max_length=MAX_HISTORY, description="Recent plays; empty: a cold user.")
    k: int | None = Field(None, description="How many items (1..catalog size; default 100 or the catalog size).")
    hour: int | None = Field(None, ge=0, le=23, description="Local hour of the request (context; default 0).")


class Listed(BaseModel):
    rank: int
    item_id: int
    score: float
    model_config = ConfigDict(extra="allow")  # the item's metadata columns


class Context(BaseModel):
    dow: int | None
    hour: int


class RecommendResponse(BaseModel):
    user_id: int | None
    day: str | None
    cold: bool
    state: str = Field(description="known (the service's state of the user) or request (the given history)")
    context: Context
    k: int
    excluded_seen: int
    items: list[Listed]


class Health(BaseModel):
    status: str
    catalog_items: int
    users_known: int
    model_config = ConfigDict(extra="allow")


class ErrorBody(BaseModel):
    detail: str


ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "Unknown user (POST their history instead)"},
    422: {"model": ErrorBody, "description": "Bad request: k out of range, unknown items, wrong types, bad JSON"},
}


def _json(payload: Any, status: int = 200) -> Response:
    """A JSON response of ``payload``, or of a body already encoded (``Recommender`` answers are text)."""
    body = payload if isinstance(payload, str) else json.dumps(payload, allow_nan=False)
    return Response(body, status_code=status, media_type="application/json")


def _one_line(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    more = len(exc.errors()) - 5
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _plays(history: list[Play]) -> Plays:
    stamps = [p.timestamp for p in history]
    given = sum(s is not None for s in stamps)
    if 0 < given < len(stamps):
        raise RequestError(f"history: {given} of {len(stamps)} plays have a timestamp; give one for every play or for none")
    return Plays(
        item_ids=np.array([p.item_id for p in history], np.int64),
        fractions=np.array([p.watch_fraction for p in history], np.float64),
        timestamps=np.array([s.timestamp() for s in stamps], np.float64) if given else None,
        flags={f: np.array([getattr(p, f) for p in history], bool) for f in FLAGS},
    )


def create_app(recommender: Recommender) -> FastAPI:
    """The service's ASGI app over a loaded ``Recommender``."""
    app = FastAPI(
        title="twotower recommendations",
        description="Top-k retrieval from the catalog with a trained two-tower model (docs/retrieval.md).",
        version="1",
    )

    @app.exception_handler(RequestError)
    async def request_error(_: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
        return JSONResponse({"detail": _one_line(exc), "errors": errors}, status_code=422)

    @app.get("/health", response_model=Health)
    def health() -> Response:
        return _json(recommender.health())

    @app.get("/recommend", response_model=RecommendResponse, responses=ERRORS)
    def recommend_user(
        user_id: Annotated[int, Query(description="A user with a play in the lookback window before the serving day.", **INT64)],
        k: Annotated[int | None, Query(description="1..catalog size (default 100 or the catalog size).")] = None,
        hour: Annotated[int | None, Query(ge=0, le=23, description="Context hour (default: see docs).")] = None,
    ) -> Response:
        return _json(recommender.for_user(user_id, k, hour))

    @app.post("/recommend", response_model=RecommendResponse, responses=ERRORS)
    def recommend_history(body: HistoryRequest) -> Response:
        return _json(recommender.for_history(_plays(body.history), body.k, body.user_id, body.hour))

    return app


def run_server(recommender: Recommender, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Serve until interrupted (uvicorn, one process: the model and index are loaded once)."""
    import uvicorn

    uvicorn.run(create_app(recommender), host=host, port=port, log_level=log_level)
