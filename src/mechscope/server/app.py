"""The feature database's web UI and JSON API (Starlette; ``mechscope serve`` runs it on uvicorn).

JSON: ``GET /api/sources``, ``GET /api/features/{source}/{index}``, ``GET /api/search?q=&mode=
text|semantic|token&limit=``, ``POST /api/infer`` ``{"text", "source", "limit"}``. Pages: ``/``,
``/search``, ``/feature/{source}/{index}``, ``/source/{source}``, ``/infer``; stored attribution
graphs: ``/graphs``, ``/graph/{name}``, ``/api/graphs[/{name}]`` (:mod:`.graphs`). Assets:
``/assets/{style.css, features.css, features.js, graph.css, graph.js}`` (a fixed list, so no path
leaves the folder).

Safety: the database is opened read-only and no endpoint writes; every response carries a
Content-Security-Policy without inline script (:mod:`.security`); an access token, when set, is
checked on every request; queries, ``limit`` and bodies are capped; an unknown source or index
answers 404 JSON, a bad parameter 400 JSON, and an unexpected error 500 JSON without a traceback.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from mechscope.errors import MechscopeError
from mechscope.features import FeatureDB, FeatureNotFound, open_db
from mechscope.features import search as fs
from mechscope.server.graphs import GraphStore, graph_routes
from mechscope.server.security import MAX_BODY, SecurityMiddleware
from mechscope.viz import features as pages

__all__ = ["MAX_LIMIT", "create_app"]

MAX_LIMIT = 100
ASSETS = {"style.css": "text/css", "features.css": "text/css", "features.js": "text/javascript",
          "graph.css": "text/css", "graph.js": "text/javascript"}  # fmt: skip
SEARCH_MODES = ("text", "semantic", "token")


class BadRequest(MechscopeError):
    """A parameter the API cannot use (400)."""


def _limit(value: Any, default: int = 20) -> int:
    if value in (None, ""):
        return default
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise BadRequest(f"limit must be a whole number, got {str(value)[:40]!r}") from None
    if not 1 <= n <= MAX_LIMIT:
        raise BadRequest(f"limit must lie in 1..{MAX_LIMIT}, got {n}")
    return n


def _index(text: str) -> int:
    if not text.isdigit() or len(text) > 12:
        raise BadRequest(f"feature index must be a whole number, got {text[:40]!r}")
    return int(text)


class _State:
    """The open database and, loaded on the first inference, the model."""

    def __init__(self, db: FeatureDB, model: Any, load_model: Callable[[str], Any] | None) -> None:
        self.db = db
        self.model = model
        self.load_model = load_model
        self.lock = threading.Lock()  # one forward at a time: hooks live on the shared model

    def get_model(self) -> Any:
        if self.model is None:
            if self.load_model is None:
                raise BadRequest("this server runs without a model; start it with --model")
            self.model = self.load_model(self.db.meta().get("model", ""))
        return self.model


def _search(db: FeatureDB, q: str, mode: str, limit: int) -> list[dict[str, Any]]:
    if mode not in SEARCH_MODES:
        raise BadRequest(f"mode must be one of {', '.join(SEARCH_MODES)}, got {mode[:40]!r}")
    if len(q) > fs.MAX_QUERY:
        raise BadRequest(f"the query has {len(q)} characters; the limit is {fs.MAX_QUERY}")
    if mode == "token":
        return fs.search_token(db, q, limit)
    return (fs.search_text if mode == "text" else fs.search_semantic)(db, q, limit)


def _routes(state: _State) -> list[Route]:
    db = state.db

    async def api_sources(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(db.sources))

    async def api_feature(request: Request) -> Response:
        p = request.path_params
        return JSONResponse(await run_in_threadpool(db.feature, p["source"], _index(p["index"])))

    async def api_search(request: Request) -> Response:
        q = request.query_params.get("q", "")
        mode = request.query_params.get("mode", "text")
        limit = _limit(request.query_params.get("limit"))
        return JSONResponse({"results": await run_in_threadpool(_search, db, q, mode, limit)})

    async def api_infer(request: Request) -> Response:
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return JSONResponse({"error": f"the body is over {MAX_BODY} bytes"}, status_code=413)  # fmt: skip
        try:
            data = json.loads(body or b"null")
        except (ValueError, UnicodeDecodeError):
            raise BadRequest('the body must be JSON: {"text", "source", "limit"}') from None
        if not isinstance(data, dict) or not isinstance(data.get("text"), str) or not isinstance(data.get("source"), str):  # fmt: skip
            raise BadRequest('the body must be {"text": str, "source": str, "limit": int}')
        db.source(data["source"])  # 404 before any model work
        limit = _limit(data.get("limit"), 10)

        def run() -> dict[str, Any]:
            with state.lock:
                out = fs.search_infer(db, state.get_model(), data["text"], data["source"], limit)
            return {"tokens": out["tokens"], "features": out["features"]}

        return JSONResponse(await run_in_threadpool(run))

    async def index(request: Request) -> Response:
        return HTMLResponse(pages.index_page(db.meta(), db.sources()))

    async def search_page(request: Request) -> Response:
        q = request.query_params.get("q", "")
        mode = request.query_params.get("mode", "text")
        if not q.strip():
            return HTMLResponse(pages.search_page("", mode, []))
        try:
            results = await run_in_threadpool(_search, db, q, mode, MAX_LIMIT)
        except FeatureNotFound:
            raise
        except MechscopeError as exc:
            return HTMLResponse(pages.search_page(q, mode, [], str(exc)), status_code=400)
        return HTMLResponse(pages.search_page(q, mode, results))

    async def feature_page(request: Request) -> Response:
        p = request.path_params
        f = await run_in_threadpool(db.feature, p["source"], _index(p["index"]))
        return HTMLResponse(pages.feature_page(f, db.source(p["source"])["n_features"]))

    async def source_page(request: Request) -> Response:
        name = request.path_params["source"]
        stats = await run_in_threadpool(db.stats, name)
        scores = await run_in_threadpool(db.score_values, name)
        return HTMLResponse(pages.source_page(db.source(name), stats, scores=scores))

    async def infer_page(request: Request) -> Response:
        return HTMLResponse(pages.infer_page(db.sources(), fs.MAX_INFER, MAX_LIMIT))

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ASSETS:
            raise FeatureNotFound(f"no asset {name[:60]!r}")
        text = resources.files("mechscope.viz").joinpath("templates", "assets", name).read_text("utf-8")  # fmt: skip
        return Response(text, media_type=ASSETS[name], headers={"Cache-Control": "max-age=300"})

    return [
        Route("/api/sources", api_sources),
        Route("/api/features/{source}/{index}", api_feature),
        Route("/api/search", api_search),
        Route("/api/infer", api_infer, methods=["POST"]),
        Route("/", index),
        Route("/search", search_page),
        Route("/feature/{source}/{index}", feature_page),
        Route("/source/{source}", source_page),
        Route("/infer", infer_page),
        Route("/assets/{name}", asset),
    ]


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _error(request: Request, status: int, message: str) -> Response:
    if _wants_json(request):
        return JSONResponse({"error": message}, status_code=status)
    return HTMLResponse(pages.error_page(message), status_code=status)


def create_app(
    db_path: str,
    *,
    token: str | None = None,
    model: Any = None,
    load_model: Callable[[str], Any] | None = None,
    graphs: str | None = None,
) -> Starlette:
    """The app over the database ``db_path`` (opened read-only). ``model`` serves inference
    (``load_model(name)`` loads the database's model on the first inference instead); the
    graph JSON files of the folder ``graphs`` are shown at ``/graphs``."""
    store = GraphStore(graphs)
    db = open_db(db_path, readonly=True)
    state = _State(db, model, load_model)

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(request, 404, str(exc) if isinstance(exc, FeatureNotFound) else "no such page")  # fmt: skip

    async def bad(request: Request, exc: Exception) -> Response:
        return _error(request, 400, str(exc).splitlines()[0] if str(exc) else "bad request")

    async def failed(request: Request, exc: Exception) -> Response:
        return _error(request, 500, "internal error")

    async def method(request: Request, exc: Exception) -> Response:
        return _error(request, 405, "method not allowed")

    app = Starlette(
        routes=_routes(state) + graph_routes(db, store),
        exception_handlers={
            404: not_found,
            405: method,
            FeatureNotFound: not_found,
            MechscopeError: bad,
            Exception: failed,
        },  # fmt: skip
    )
    app.add_middleware(SecurityMiddleware, token=token)
    app.state.features = state
    return app
