"""Planted features with a known meaning: the ground truth the explainers and scorers are checked on.

Windows of text are built from lowercase filler words (none of them a Python keyword), and each
window receives, independently with probability ``p_class``, one to three tokens of every planted
class. A planted feature fires (uniform 0.5-2.0) exactly on the tokens of its class:

- ``digits``: numbers (" 7", " 42", " 2024");
- ``capitalised words``: names (" Alice", " Paris");
- ``the token "river"``: one given word;
- ``closing brackets``: ")", "]", "}";
- ``Python keywords``: " def", " return", " import"...

The name of each feature is its true explanation, worded as the ``tokens`` explainer and the
lexical judge read it. Because classes land in windows independently, an explanation of another
feature carries no information about a window (the shuffled control's chance level, AUROC 0.5).
:func:`planted_examples` picks top, quantile and negative windows the way a feature database
stores them; :func:`write_planted_db` writes them into a feature database.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mechscope.autointerp.classes import CLASSES
from mechscope.autointerp.records import Example, FeatureExamples

__all__ = ["PLANTED", "planted_examples", "planted_windows", "write_planted_db"]

FILLER = [
    "water",
    "stone",
    "light",
    "quiet",
    "small",
    "house",
    "road",
    "green",
    "open",
    "over",
    "under",
    "near",
    "slowly",
    "through",
    "garden",
    "morning",
    "bread",
    "table",
    "window",
    "paper",
    "old",
    "long",
    "warm",
    "little",
    "between",
    "across",
    "without",
    "cloud",
    "village",
    "bridge",
    "simple",
    "early",
    "story",
    "music",
    "field",
    "market",
    "yellow",
    "friend",
    "letter",
]
TOKENS: dict[str, list[str]] = {
    "digits": [" 7", " 42", " 2024", " 3", " 15", " 98", " 100", " 6"],
    "capitalised words": [" Alice", " Paris", " Monday", " London", " Maria", " Tokyo", " Oslo"],
    'the token "river"': [" river"],
    "closing brackets": [")", "]", "}"],
    "Python keywords": [" def", " return", " import", " while", " lambda", " yield", " class"],
}
PLANTED: dict[str, Callable[[str], bool]] = {
    "digits": lambda t: CLASSES["digits"](t.strip()),
    "capitalised words": lambda t: CLASSES["capitalised words"](t.strip()),
    'the token "river"': lambda t: t.strip() == "river",
    "closing brackets": lambda t: CLASSES["closing brackets"](t.strip()),
    "Python keywords": lambda t: CLASSES["Python keywords"](t.strip()),
}


def planted_windows(
    n_windows: int = 400, length: int = 16, p_class: float = 0.3, seed: int = 0
) -> list[list[str]]:
    """Random windows of ``length`` tokens: filler with planted class tokens inserted."""
    rng = np.random.default_rng(seed)
    windows = []
    for _ in range(n_windows):
        tokens = [" " + FILLER[i] for i in rng.integers(len(FILLER), size=length)]
        for choices in TOKENS.values():
            if rng.random() < p_class:
                for pos in rng.choice(length, size=int(rng.integers(1, 4)), replace=False):
                    tokens[int(pos)] = choices[int(rng.integers(len(choices)))]
        windows.append(tokens)
    return windows


def planted_examples(
    windows: list[list[str]] | None = None,
    n_top: int = 20,
    n_quantile: int = 10,
    n_negative: int = 20,
    source: str = "planted",
    seed: int = 0,
) -> list[FeatureExamples]:
    """Each planted feature's top, quantile and negative windows (``meta["truth"]``: its name)."""
    windows = windows if windows is not None else planted_windows(seed=seed)
    rng = np.random.default_rng(seed + 1)
    out = []
    for index, (name, test) in enumerate(PLANTED.items()):
        examples = []
        for tokens in windows:
            values = [float(rng.uniform(0.5, 2.0)) if test(t) else 0.0 for t in tokens]
            examples.append(Example(tuple(tokens), tuple(values)))
        order = sorted(range(len(examples)), key=lambda i: -examples[i].max)
        active = [i for i in order if examples[i].max > 0]
        idle = [i for i in order if examples[i].max <= 0]
        top = active[:n_top]
        rest = active[n_top:]
        quantile = [rest[int(j)] for j in np.linspace(0, len(rest) - 1, n_quantile)] if rest else []
        negative = [idle[int(j)] for j in rng.permutation(len(idle))[:n_negative]]
        kinds = [tuple(examples[i] for i in idx) for idx in (top, quantile, negative)]
        out.append(FeatureExamples(source, index, *kinds, meta={"truth": name}))
    return out


def write_planted_db(path: str, features: list[FeatureExamples], model: str = "planted") -> None:
    """Write planted features into a new feature database (schema of ``mechscope.features``).

    Token ids are positions in a vocabulary made of the windows' distinct tokens. Statistics,
    histogram and neighbours are filled from the examples only (planted features have no
    unembedding, so ``logits`` is empty).
    """
    from mechscope.features.db import create_db, floats_blob, ints_blob

    vocab: dict[str, int] = {}
    for feature in features:
        for example in (*feature.top, *feature.quantile, *feature.negative):
            for token in example.tokens:
                vocab.setdefault(token, len(vocab))
    source = features[0].source
    with create_db(path) as db:
        b = db.backend
        with b.transaction():
            b.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [("model", model), ("status", "complete")])  # fmt: skip
            b.execute(
                "INSERT INTO sources (source, kind, hook_name, n_features, config) "
                "VALUES (?, ?, ?, ?, ?)",
                [source, "latent", "planted", len(features), "{}"],
            )
            b.executemany("INSERT INTO vocab (id, token) VALUES (?, ?)", [(i, t) for t, i in vocab.items()])  # fmt: skip
            for f in features:
                b.execute(
                    "INSERT INTO features VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [source, f.index, max(e.max for e in f.top), 0.0, 0.0, 0.0, 0.0,
                     '{"edges": [], "counts": []}', '{"promotes": [], "suppresses": []}', "[]"],
                )  # fmt: skip
                for kind in ("top", "quantile", "negative"):
                    rows = []
                    for slot, e in enumerate(getattr(f, kind)):
                        pos = max(range(len(e.values)), key=e.values.__getitem__)
                        ids = [vocab[t] for t in e.tokens]
                        rows.append([source, f.index, kind, slot, e.max, pos, slot, None, None,
                                     ints_blob(ids), floats_blob(e.values)])  # fmt: skip
                    b.executemany("INSERT INTO examples VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)  # fmt: skip
