"""The web UI's stored attribution graphs (``mechscope serve DB --graphs DIR``).

``GET /graphs`` lists them, ``/graph/{name}`` shows one (the graph view, its hover showing the
served feature database's examples of each feature: :func:`mechscope.graphs.examples.node_examples`),
``/api/graphs`` and ``/api/graphs/{name}`` answer JSON (the file as ``mechscope graph --out``
wrote it). The graphs are the ``*.json`` files of one folder that hold a graph (``metadata``,
``nodes``, ``links``); a name is a file's stem, looked up in that listing, so no path from a
request reaches the file system. Files are re-read when they change.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from mechscope.errors import MechscopeError
from mechscope.features import FeatureDB, FeatureNotFound
from mechscope.viz.graph import graph_index_page, graph_server_page

__all__ = ["GraphStore", "graph_routes"]

MAX_BYTES = 200_000_000  # larger files are not listed


class GraphStore:
    """The graph JSON files of ``folder`` (None: no graphs), parsed once per version."""

    def __init__(self, folder: str | None) -> None:
        self.folder = Path(folder) if folder else None
        if self.folder is not None and not self.folder.is_dir():
            raise MechscopeError(f"--graphs {folder}: no such folder")
        self._cache: dict[str, tuple[tuple[int, int], dict[str, Any] | None, Any]] = {}
        self._lock = threading.Lock()

    def _files(self) -> dict[str, Path]:
        if self.folder is None:
            return {}
        return {p.stem: p for p in sorted(self.folder.glob("*.json")) if p.is_file()}

    def _load(self, name: str, path: Path) -> dict[str, Any] | None:
        st = path.stat()
        version = (st.st_mtime_ns, st.st_size)
        with self._lock:
            hit = self._cache.get(name)
            if hit is not None and hit[0] == version:
                return hit[1]
        payload = None
        if st.st_size <= MAX_BYTES:
            try:
                data = json.loads(path.read_text("utf-8"))
            except (ValueError, UnicodeDecodeError):
                data = None
            if isinstance(data, dict) and {"metadata", "nodes", "links"} <= data.keys():
                payload = data
        with self._lock:
            self._cache[name] = (version, payload, None)
        return payload

    def summaries(self) -> list[dict[str, Any]]:
        """``[{"name", "prompt", "model", "nodes", "links", "replacement", "completeness"}]``."""
        out = []
        for name, path in self._files().items():
            g = self._load(name, path)
            if g is None:
                continue
            info = g["metadata"].get("info", {})
            out.append({"name": name, "prompt": g["metadata"].get("prompt", ""),
                        "model": info.get("model", ""), "nodes": len(g["nodes"]),
                        "links": len(g["links"]), "replacement": info.get("replacement_score"),
                        "completeness": info.get("completeness_score")})  # fmt: skip
        return out

    def get(self, name: str) -> dict[str, Any]:
        path = self._files().get(name)
        payload = self._load(name, path) if path is not None else None
        if payload is None:
            raise FeatureNotFound(f"no graph {name[:80]!r} in the graph folder")
        return payload

    def examples(self, name: str, db: FeatureDB) -> tuple[dict[str, Any], str]:
        """The hover examples of graph ``name`` and a note when the database has none for it."""
        from mechscope.graphs.examples import node_examples

        payload = self.get(name)
        with self._lock:
            version, _, cached = self._cache[name]
        if cached is not None:
            return cached
        try:
            result: tuple[dict[str, Any], str] = (node_examples(db, payload), "")
        except MechscopeError as exc:
            result = ({}, f"No feature examples: {exc}")
        with self._lock:
            if self._cache.get(name, (None,))[0] == version:
                self._cache[name] = (version, payload, result)
        return result


def graph_routes(db: FeatureDB, store: GraphStore) -> list[Route]:
    """The routes above over ``store``, with examples from ``db``."""

    async def api_list(request: Request) -> Response:
        return JSONResponse({"graphs": await run_in_threadpool(store.summaries)})

    async def api_graph(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(store.get, request.path_params["name"]))

    async def index(request: Request) -> Response:
        graphs = await run_in_threadpool(store.summaries)
        folder = None if store.folder is None else str(store.folder)
        return HTMLResponse(graph_index_page(graphs, folder))

    async def show(request: Request) -> Response:
        name = request.path_params["name"]
        payload = await run_in_threadpool(store.get, name)
        examples, note = await run_in_threadpool(store.examples, name, db)
        return HTMLResponse(graph_server_page(name, payload, examples, note))

    return [
        Route("/api/graphs", api_list),
        Route("/api/graphs/{name}", api_graph),
        Route("/graphs", index),
        Route("/graph/{name}", show),
    ]
