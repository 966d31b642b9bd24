"""``sae train`` and ``harvest`` never destroy or mix a user's data: own-run checks, resume only
with the same settings, one writer per folder (two processes), kill -9 then a clean rerun."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from mechscope.activations import ActivationStore, harvest
from mechscope.cli.main import cli
from mechscope.corpus import Corpus
from mechscope.models.hooked import HookedModel
from mechscope.models.tiny import tiny_model, tiny_tokenizer
from mechscope.sae import load_sae

WORDS = [f"w{i}" for i in range(90)]

# Runs `mechscope ARGS` in a subprocess; "hold" makes it wait (holding its folder) until FLAG
# exists, "kill" makes it SIGKILL itself right after its second checkpoint.
SCRIPT = textwrap.dedent(
    """
    import importlib, os, pathlib, signal, sys, time
    import torch
    torch.set_num_threads(1)
    from mechscope.cli.main import main

    harvest = importlib.import_module("mechscope.activations.harvest")  # modules, not functions
    train = importlib.import_module("mechscope.sae.train")

    mode, flag, *args = sys.argv[1:]

    def hold(fn):
        def wrapped(*a, **k):
            pathlib.Path(flag + ".started").write_text(str(os.getpid()))
            while not os.path.exists(flag):
                time.sleep(0.02)
            return fn(*a, **k)
        return wrapped

    def kill_after_second(fn):
        calls = []
        def wrapped(*a, **k):
            out = fn(*a, **k)
            calls.append(1)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            return out
        return wrapped

    if mode == "hold":
        train.train_step = hold(train.train_step)
        harvest._harvest_shard = hold(harvest._harvest_shard)
    elif mode == "kill":
        train.save_checkpoint = kill_after_second(train.save_checkpoint)
    main(args)
    """
)


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("safe") / "run_cli.py"
    path.write_text(SCRIPT)
    return path


def start(script: Path, mode: str, flag: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CI": "1"}
    command = [sys.executable, str(script), mode, str(flag), *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err.decode()


def wait_started(flag: Path, proc: subprocess.Popen) -> None:
    started = Path(str(flag) + ".started")
    while not started.exists():
        assert proc.poll() is None, finish(proc)[1]
        time.sleep(0.05)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    rng = random.Random(0)
    texts = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 200))) for _ in range(60)]
    model = HookedModel(tiny_model("llama"), tiny_tokenizer(WORDS))
    corpus = Corpus.from_texts(texts, name="toy")
    root = tmp_path_factory.mktemp("safe-stores")
    kw = {"seq_len": 32, "split": "all", "progress": False}
    one = harvest(model, "blocks.1.hook_resid_post", corpus, 2048, root / "a", **kw)
    two = harvest(model, "blocks.1.hook_resid_post", corpus, 2048, root / "b", seed=1, **kw)
    return one, two


def train_args(store: ActivationStore, out: Path, *extra: str) -> list[str]:
    return ["sae", "train", "--acts", str(store.folder), "--k", "4", "--expansion", "2",
            "--batch-size", "256", "--lr", "3e-3", "--checkpoint-every", "2", "--out", str(out),
            "-q", *extra]  # fmt: skip


def invoke(args: list[str]):
    return CliRunner().invoke(cli, args)


def one_line_error(result, *parts: str) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


def test_reruns_never_delete_or_mix(stores, tmp_path):
    out = tmp_path / "sae"
    assert invoke(train_args(stores[0], out)).exit_code == 0
    record = json.loads((out / "training.json").read_text())
    assert record["complete"] and record["settings"]["--k"] == 4
    (out / "notes.txt").write_text("mine")
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "mine.txt").write_text("mine too")
    weights = (out / "sae_weights.safetensors").read_bytes()

    again = invoke(train_args(stores[0], out))  # the same run, finished: not trained again
    assert again.exit_code == 0 and "already holds this SAE" in again.output
    explicit = invoke(train_args(stores[0], out, "--tokens", "2048"))  # what the default means
    assert explicit.exit_code == 0 and "already holds this SAE" in explicit.output
    assert (out / "sae_weights.safetensors").read_bytes() == weights

    for extra, shown in [
        (["--k", "8"], "--k 4 -> 8"),
        (["--lr", "1e-3"], "--lr 0.003 -> 0.001"),
        (["--seed", "1"], "--seed 0 -> 1"),
        (["--tokens", "1024"], "--tokens 2048 -> 1024"),
        (["--arch", "relu"], "--arch 'topk' -> 'relu'"),
        (["--expansion", "3"], "--expansion 2 -> 3"),
    ]:
        result = invoke(train_args(stores[0], out, *extra))
        one_line_error(result, "holds a run with other settings", shown, "--overwrite")
    other_store = invoke(train_args(stores[1], out))
    one_line_error(other_store, "--acts (store content) differs")
    assert json.loads((out / "training.json").read_text()) == record  # nothing was touched
    assert (out / "sae_weights.safetensors").read_bytes() == weights

    replaced = invoke(train_args(stores[0], out, "--k", "8", "--overwrite"))
    assert replaced.exit_code == 0, replaced.output
    assert load_sae(out).cfg.k == 8
    assert (out / "notes.txt").read_text() == "mine"  # never written by a run: kept
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["mine.txt"]


def test_a_folder_that_is_no_run_is_refused(stores, tmp_path):
    (tmp_path / "README.md").write_text("my notes")
    result = invoke(train_args(stores[0], tmp_path))
    one_line_error(result, "is not empty and holds no `mechscope sae train` run (README.md)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["README.md"]
    result = invoke(train_args(stores[0], tmp_path, "--overwrite"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "README.md").read_text() == "my notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "README.md", "cfg.json", "sae_weights.safetensors", "training.json"
    ]  # fmt: skip


@pytest.mark.parametrize("value", ["0", "-1"])
def test_batch_size_must_be_positive(stores, tmp_path, value):
    args = train_args(stores[0], tmp_path / "o")
    args[args.index("--batch-size") + 1] = value
    one_line_error(invoke(args), "--batch-size", "not in the range x>=1")
    assert not (tmp_path / "o").exists()


def test_damaged_checkpoint_pointer_is_one_line(stores, tmp_path):
    out = tmp_path / "sae"
    assert invoke(train_args(stores[0], out)).exit_code == 0
    record = json.loads((out / "training.json").read_text())
    (out / "training.json").write_text(json.dumps({**record, "complete": False}))  # "crashed"
    (out / "checkpoints").mkdir()
    (out / "checkpoints" / "latest.json").write_text('{"checkpoint": "step-6"}')
    one_line_error(invoke(train_args(stores[0], out)), "points at step-6, which is missing")
    (out / "checkpoints" / "latest.json").write_text("{")
    one_line_error(invoke(train_args(stores[0], out)), "latest.json is damaged")


def test_a_second_training_waits_for_no_one_and_exits_2(script, stores, tmp_path):
    out, flag = tmp_path / "sae", tmp_path / "go"
    first = start(script, "hold", flag, *train_args(stores[0], out))
    wait_started(flag, first)  # the first run holds the folder, mid-training
    second = start(script, "run", flag, *train_args(stores[0], out))
    code, err = finish(second)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"error: {out} is in use by mechscope sae train (pid {first.pid} ")
    assert f"on {socket.gethostname()}" in lines[0]
    flag.touch()
    assert finish(first)[0] == 0
    assert load_sae(out).cfg.k == 4 and json.loads((out / "training.json").read_text())["complete"]


def test_kill_9_mid_training_then_rerun_resumes_exactly(script, stores, tmp_path):
    reference, out = tmp_path / "reference", tmp_path / "sae"
    assert finish(start(script, "run", tmp_path / "-", *train_args(stores[0], reference)))[0] == 0
    code, err = finish(start(script, "kill", tmp_path / "-", *train_args(stores[0], out)))
    assert code == -signal.SIGKILL, err
    assert json.loads((out / "checkpoints" / "latest.json").read_text()) == {"checkpoint": "step-4"}
    assert not json.loads((out / "training.json").read_text())["complete"]
    resumed = start(script, "run", tmp_path / "-", *train_args(stores[0], out)[:-1])  # not -q
    code, err = finish(resumed)
    assert code == 0 and "resuming from" in err and "(step 4)" in err, err  # no stale lock
    for name in ("sae_weights.safetensors", "cfg.json"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    history = [json.loads((d / "training.json").read_text())["history"] for d in (out, reference)]
    assert history[0] == history[1]
    assert not (out / "checkpoints").exists() and not (out / ".mechscope.lock").exists()


def test_two_harvests_into_one_folder(script, tiny_folder, corpus, tmp_path):
    out, flag = tmp_path / "acts", tmp_path / "go"
    args = ["harvest", "-m", str(tiny_folder), "-c", str(corpus), "-s", "blocks.1.hook_resid_post",
            "--seq-len", "16", "--shard-tokens", "128", "--split", "all", "-o", str(out), "-q"]  # fmt: skip
    first = start(script, "hold", flag, *args, "--tokens", "600")
    wait_started(flag, first)
    code, err = finish(start(script, "run", flag, *args, "--tokens", "1200"))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"is in use by mechscope harvest (pid {first.pid} on " in err
    flag.touch()
    assert finish(first)[0] == 0
    store = ActivationStore.open(out, verify=True)
    assert store.manifest.n_tokens == 600 and store.manifest.complete
    rows = store.tensor()
    assert finish(start(script, "run", flag, *args, "--tokens", "1200"))[0] == 0  # now it may
    grown = ActivationStore.open(out, verify=True)
    assert grown.manifest.n_tokens == 1200
    assert (grown.tensor()[:600] == rows).all()


def test_a_report_into_a_folder_in_use_exits_2(tmp_path):
    from mechscope.files import folder_lock

    with folder_lock(tmp_path, "mechscope report"):
        result = invoke(["report", "--out", str(tmp_path), "-m", "not-loaded", "-q"])
    one_line_error(result, f"{tmp_path} is in use by mechscope report (pid {os.getpid()} on ")
