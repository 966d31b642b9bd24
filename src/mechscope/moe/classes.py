"""Token classes for specialisation: a label per token, from its text or from a given map.

The default classes read the decoded token: ``space`` (whitespace only), ``digit`` (digits, maybe
after a space), ``punct`` (punctuation or symbols), ``word`` (letters after a leading space: a
word's start), ``subword`` (letters continuing a word), ``other`` (anything else, mixed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["DEFAULT_CLASSES", "classify_text", "token_classes"]

DEFAULT_CLASSES = ("word", "subword", "digit", "punct", "space", "other")


def classify_text(text: str) -> str:
    """The default class of one decoded token."""
    body = text.lstrip()
    if not body:
        return "space"
    if body.isdigit():
        return "digit"
    if all(not c.isalnum() for c in body):
        return "punct"
    if body.isalpha():
        return "word" if text[0].isspace() else "subword"
    return "other"


def token_classes(
    tokens: Tensor,
    tokenizer: Any = None,
    classes: Mapping[int, str] | None = None,
    names: Sequence[str] | None = None,
) -> tuple[Tensor, list[str]]:
    """A class index per token [token] and the class names.

    ``classes`` maps token ids to class names (ids it lacks are ``other``); without it each token
    is classed by its decoded text. ``names`` fixes the order of the classes.
    """
    flat = tokens.reshape(-1)
    ids = flat.unique().tolist()
    if classes is not None:
        label = {i: classes.get(i, "other") for i in ids}
    else:
        label = {i: classify_text(tokenizer.decode([i])) for i in ids}
    if names is not None:
        order = list(names)
    elif classes is not None:  # the given classes by name, then "other"
        order = sorted({*label.values()} - {"other"}) + ["other"] * ("other" in label.values())
    else:
        order = [c for c in DEFAULT_CLASSES if c in label.values()]
    order += sorted({*label.values()} - set(order))
    index = {c: k for k, c in enumerate(order)}
    lookup = torch.zeros(int(flat.max()) + 1, dtype=torch.long)
    for i, c in label.items():
        lookup[i] = index[c]
    return lookup[flat], order
