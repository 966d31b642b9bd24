"""The JSON API and pages through Starlette's test client: shapes, caps, errors, escaping, CSP,
the access token and the read-only database."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner
from features_helpers import XSS
from starlette.testclient import TestClient

from mechscope.features import open_db
from mechscope.features import search as fs
from mechscope.server import create_app

TOKEN = "s3cret-token-0123456789"


@pytest.fixture(scope="module")
def client(served_db, tiny):
    with TestClient(create_app(str(served_db), model=tiny), raise_server_exceptions=False) as c:
        yield c


def test_sources_and_feature_json_equal_the_database(client, served_db) -> None:
    with open_db(str(served_db), readonly=True) as db:
        assert client.get("/api/sources").json() == db.sources()
        r = client.get("/api/features/mlp:1/3")
        assert r.status_code == 200 and r.json() == json.loads(json.dumps(db.feature("mlp:1", 3)))
    body = r.json()
    for key in ("source", "index", "max", "density", "examples", "histogram", "logits", "neighbours", "explanations"):  # fmt: skip
        assert key in body
    values = [e["value"] for e in body["examples"]]
    assert values == sorted(values, reverse=True)
    assert set(body["examples"][0]) >= {"token_ids", "tokens", "values"}


def test_search_and_infer(client, served_db, tiny) -> None:
    r = client.get("/api/search", params={"q": "pets", "mode": "text", "limit": 5})
    assert r.json()["results"][0]["index"] == 4 and r.json()["results"][0]["score"] > 0
    r = client.get("/api/search", params={"q": "t17", "mode": "token"})
    assert r.status_code == 200 and r.json()["results"]
    r = client.post("/api/infer", json={"text": "t5 t17 t3 t44", "source": "mlp:1", "limit": 4})
    with open_db(str(served_db), readonly=True) as db:
        ref = fs.search_infer(db, tiny, "t5 t17 t3 t44", "mlp:1", 4)
    assert r.status_code == 200
    assert r.json() == {"tokens": ref["tokens"], "features": ref["features"]}


@pytest.mark.parametrize(
    ("method", "url", "kwargs", "status", "words"),
    [
        ("get", "/api/features/nope/1", {}, 404, "no source"),
        ("get", "/api/features/mlp:1/80", {}, 404, "out of range"),
        ("get", "/api/features/mlp:1/abc", {}, 400, "whole number"),
        ("get", "/api/search?q=x&limit=0", {}, 400, "limit"),
        ("get", "/api/search?q=x&limit=many", {}, 400, "limit"),
        ("get", "/api/search?q=x&mode=sql", {}, 400, "mode"),
        ("get", "/api/search?q=" + "a" * 501, {}, 400, "limit is 500"),
        ("get", "/api/nothing", {}, 404, "no such page"),
        ("get", "/api/infer", {}, 405, "not allowed"),
        ("post", "/api/infer", {"content": b"{bad"}, 400, "must be JSON"),
        ("post", "/api/infer", {"json": {"text": 3, "source": "mlp:1"}}, 400, "must be"),
        ("post", "/api/infer", {"json": {"text": "t1", "source": "zzz"}}, 404, "no source"),
        (
            "post",
            "/api/infer",
            {"json": {"text": "t1" * 3000, "source": "mlp:1"}},
            400,
            "characters",
        ),  # fmt: skip
        ("post", "/api/infer", {"content": b"x" * 70_000}, 413, "over"),
        ("get", "/assets/../../../etc/passwd", {}, 404, ""),
        ("get", "/assets/app.py", {}, 404, "no asset"),
    ],
)
def test_errors_are_json_with_the_right_status(client, method, url, kwargs, status, words) -> None:
    r = getattr(client, method)(url, **kwargs)
    assert r.status_code == status, r.text
    if url.startswith("/api"):
        assert words in r.json()["error"] and "Traceback" not in r.text


def test_pages_escape_model_text_and_load_no_inline_script(client) -> None:
    for url in ["/", "/search?q=payload", "/feature/mlp:1/5", "/source/mlp:1", "/infer",
                "/feature/sae:tiny-sae/2", "/feature/attn:0/1", "/search?q=t17&mode=token"]:  # fmt: skip
        r = client.get(url)
        assert r.status_code == 200, url
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp
        html = r.text
        assert all('src="/assets/' in tag for tag in re.findall(r"<script[^>]*>", html)), url
        assert re.search(r"<script[^>]*>\s*[^<\s]", html) is None  # no inline script body
        tags = re.findall(r"<[^>]+>", html)
        assert not [t for t in tags if re.search(r"\son[a-z]+\s*=", t)]  # no event handlers
        assert XSS[0] not in html and XSS[1] not in html
    page = client.get("/feature/mlp:1/5").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # shown as text
    assert client.get("/feature/mlp:1/999").status_code == 404
    assert client.get("/assets/features.js").headers["content-type"].startswith("text/javascript")


def test_token_is_required_on_every_request(served_db) -> None:
    app = create_app(str(served_db), token=TOKEN)
    with TestClient(app) as c:
        for url in ["/", "/api/sources", "/assets/features.js"]:
            assert c.get(url).status_code == 401
        assert c.get("/api/sources", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert (
            c.get("/api/sources", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        )
        r = c.get(f"/?token={TOKEN}")
        assert r.status_code == 200 and "mechscope_token" in r.headers["set-cookie"]
        assert c.get("/api/sources").status_code == 200  # the cookie now carries it


def test_database_is_read_only(client) -> None:
    db = client.app.state.features.db
    assert db.backend.readonly
    with pytest.raises(Exception, match="read-only|readonly"):
        db.backend.execute("DELETE FROM features")


def test_serve_refuses_a_public_address_without_a_token(served_db, monkeypatch) -> None:
    from mechscope.cli.main import cli

    monkeypatch.delenv("MECHSCOPE_TOKEN", raising=False)
    r = CliRunner().invoke(cli, ["serve", str(served_db), "--host", "0.0.0.0"])
    assert r.exit_code == 2 and "pass --token" in r.output
    r = CliRunner().invoke(cli, ["serve", str(served_db), "--host", "0.0.0.0", "--token", "short"])
    assert r.exit_code == 2 and "too short" in r.output
    r = CliRunner().invoke(cli, ["serve", str(served_db) + "x"])
    assert r.exit_code == 2 and "no feature database" in r.output
