"""Helpers and session fixtures of the feature-database and server tests: a saved tiny Llama whose
tokenizer splits on whitespace only (so HTML payloads planted in the corpus are single tokens), a
JSONL corpus, a random SAE on ``blocks.1.hook_resid_post`` and one database built from all three
sources (``mlp:1``, ``attn:0``, ``sae:tiny-sae``)."""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from mechscope.models.tiny import tiny_model

XSS = ["<script>alert(1)</script>", '"><img/src=x/onerror=alert(2)>']
WORDS = [f"t{i}" for i in range(90)]
SEQ_LEN = 16
SOURCES = ("mlp:1", "attn:0", "sae:{sae}")
BUILD = {"n_tokens": 2400, "seq_len": SEQ_LEN, "batch_size": 8, "k": 6, "quantiles": 4,
         "per_quantile": 2, "negatives": 3}  # fmt: skip


def whitespace_tokenizer() -> PreTrainedTokenizerFast:
    vocab = ["[UNK]", "[PAD]", *XSS, *WORDS]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]")


def build_config(fx, **changes):
    from mechscope.features.build import BuildConfig

    sources = tuple(s.format(sae=fx["sae"]) for s in SOURCES)
    return BuildConfig(model=str(fx["model"]), sources=sources, corpus=str(fx["corpus"]), **{**BUILD, **changes})  # fmt: skip


@pytest.fixture(scope="session")
def fx(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Paths: ``model`` (folder), ``corpus`` (JSONL), ``sae`` (SAELens folder)."""
    import mechscope
    from mechscope.sae import SAE, SAEConfig, save_sae

    root = tmp_path_factory.mktemp("features-fx")
    tiny_model("llama").save_pretrained(root / "model")
    whitespace_tokenizer().save_pretrained(root / "model")
    rng = random.Random(0)
    docs = []
    for _ in range(40):
        words = [rng.choice(WORDS) for _ in range(rng.randint(30, 120))]
        words[rng.randrange(len(words))] = rng.choice(XSS)  # every document holds a payload
        docs.append(" ".join(words))
    (root / "corpus.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    model = mechscope.load(str(root / "model"), progress=False)
    cfg = SAEConfig(arch="relu", d_in=model.dims.d_model, d_sae=40, hook_name="blocks.1.hook_resid_post")  # fmt: skip
    save_sae(SAE(cfg, seed=0), root / "tiny-sae")
    return {"model": root / "model", "corpus": root / "corpus.jsonl", "sae": root / "tiny-sae", "root": root}  # fmt: skip


@pytest.fixture(scope="session")
def tiny(fx):
    import mechscope

    return mechscope.load(str(fx["model"]), progress=False)


@pytest.fixture(scope="session")
def built(fx, tiny, tmp_path_factory) -> Path:
    """A complete SQLite database of the three sources."""
    from mechscope.features.build import build_features

    path = tmp_path_factory.mktemp("features-db") / "features.db"
    build_features(tiny, build_config(fx), str(path))
    return path


PG_BIN = Path("/usr/lib/postgresql/15/bin")


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    """A throwaway PostgreSQL 15 cluster on a unix socket in a temporary folder (run as
    ``nobody`` when the tests run as root, since PostgreSQL refuses root); yields the socket dir."""
    import os
    import shutil
    import subprocess
    import tempfile

    if not (PG_BIN / "initdb").exists():
        pytest.skip("needs PostgreSQL 15 (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="mspg"))  # short: a socket path has ~100 bytes
    as_user = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(root, "nobody")
    data = root / "data"

    def run(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, timeout=120)

    run(str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")  # fmt: skip
    options = f"-k {root} -c listen_addresses='' -c fsync=off -c full_page_writes=off"
    run(str(PG_BIN / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start")  # fmt: skip
    try:
        yield root
    finally:
        run(str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


_databases = iter(range(10_000))


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request, tmp_path) -> str:
    """A new empty database: an SQLite path, or a fresh database in the test cluster."""
    if request.param == "sqlite":
        return str(tmp_path / "features.db")
    import psycopg

    host = request.getfixturevalue("pg_server")
    name = f"features_{next(_databases)}"
    with psycopg.connect(f"postgresql://postgres@/postgres?host={host}", autocommit=True) as c:
        c.execute(f"CREATE DATABASE {name}")
    return f"postgresql://postgres@/{name}?host={host}"


def running_server(app: Any) -> Iterator[str]:
    """Serve the ASGI ``app`` with uvicorn on a free 127.0.0.1 port in a thread; yield its base
    URL and stop it afterwards (the body of the browser tests' ``base_url`` fixtures)."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
