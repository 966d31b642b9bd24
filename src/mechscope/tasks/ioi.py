"""Indirect-object identification (IOI; Wang et al. 2022, "Interpretability in the Wild").

"When Mary and John went to the store, John gave a drink to" -> " Mary": the model must name the
indirect object (IO, the name mentioned once) rather than the subject (S, mentioned twice). The
answer is the IO and the wrong token the subject, so the logit difference measures the behaviour.

Prompts come in both name orders: ABBA ("A and B ..., B gave ... to" -> A) and BABA ("B and A
..., B gave ... to" -> A). Corruptions, each keeping the clean prompt's token length:

- ``"abc"``: three fresh names replace both first-clause names and the subject (Wang et al.'s
  ABC distribution); neither answer is in the prompt, so the logit difference falls to about 0;
- ``"swap"``: the second clause names the IO instead of the subject, so the right answer flips.

Names, places and objects are kept only if they are one token with a leading space, which makes
every filling of a template the same length; ``uniform=True`` keeps only the templates of the most
common length, so the whole set aligns position by position.
"""

from __future__ import annotations

import random
from typing import Any

import torch

from mechscope.errors import MechscopeError
from mechscope.tasks.base import Task
from mechscope.tasks.vocab import (
    check_n,
    check_pool,
    encode,
    largest_group,
    n_tokens,
    need_tokenizer,
    one_token,
    words,
)

TEMPLATES = (
    "When {A} and {B} went to the {place}, {S} gave a {object} to",
    "After {A} and {B} went to the {place}, {S} gave a {object} to",
    "While {A} and {B} were at the {place}, {S} gave a {object} to",
    "When {A} and {B} arrived at the {place}, {S} handed a {object} to",
    "After {A} and {B} met at the {place}, {S} sent a {object} to",
    "Since {A} and {B} were at the {place}, {S} offered a {object} to",
    "Then, {A} and {B} had a long argument. Afterwards {S} said to",
    "Then, {A} and {B} went to the {place}. {S} gave a {object} to",
    "While {A} and {B} were working at the {place}, {S} gave a {object} to",
    "Friends {A} and {B} found a {object} at the {place}. {S} gave it to",
    "When {A} and {B} got a {object} at the {place}, {S} decided to give it to",
)
NAMES = words(
    "Mary John Alice Bob Tom James Robert Michael William David Richard Joseph Thomas Charles "
    "Daniel Matthew Anthony Mark Paul Andrew Kevin Brian George Edward Jason Ryan Jacob Eric "
    "Stephen Scott Samuel Frank Patrick Jack Peter Henry Arthur Roger Carl Sean Adam Nathan "
    "Walter Louis Philip Ralph Harold Victor Martin Simon Oliver Lucas Max Leo Ben Sam Dan "
    "Patricia Jennifer Linda Elizabeth Barbara Susan Jessica Sarah Karen Lisa Nancy Betty "
    "Margaret Sandra Ashley Emily Michelle Carol Amanda Laura Rachel Anna Emma Nicole Helen "
    "Katherine Christine Catherine Maria Ruth Julie Olivia Victoria Kelly Grace Rose Sophia "
    "Diana Charlotte Marie Julia Lucy Kate Jane Claire Alex Chris"
)
PLACES = words(
    "store garden restaurant school hospital office station park house market library beach "
    "church museum bank hotel airport farm theater kitchen shop"
)
OBJECTS = words(
    "drink ring kiss bone basketball computer necklace book letter gift snack apple ball key "
    "card pen flower cake bag hat cup toy"
)
CORRUPTIONS = ("abc", "swap")


def make_ioi(
    tokenizer: Any,
    n: int,
    seed: int = 0,
    *,
    corruption: str = "abc",
    uniform: bool = True,
    templates: tuple[str, ...] = TEMPLATES,
) -> Task:
    """``n`` IOI prompts, alternating ABBA and BABA; answer = IO, wrong = subject."""
    if corruption not in CORRUPTIONS:
        raise MechscopeError(
            f"unknown IOI corruption {corruption!r}; choose one of {', '.join(CORRUPTIONS)}"
        )
    check_n(n, "ioi")
    tok = need_tokenizer(tokenizer, "ioi")
    names = one_token(tok, NAMES)
    places, objects = one_token(tok, PLACES), one_token(tok, OBJECTS)
    check_pool(names, 5, "ioi", "names")
    check_pool(places, 1, "ioi", "places")
    check_pool(objects, 1, "ioi", "objects")
    if uniform:
        fill = {"A": names[0], "B": names[1], "S": names[1], "place": places[0]}
        templates = tuple(
            largest_group(templates, lambda t: n_tokens(tok, t.format(**fill, object=objects[0])))
        )
    rng = random.Random(seed)
    rows: dict[str, list[Any]] = {k: [] for k in ("clean", "corrupt", "answer", "wrong")}
    meta: dict[str, list[Any]] = {"template": [], "order": [], "io": [], "s": []}
    for i in range(n):
        template = rng.choice(templates)
        io, s, *fresh = rng.sample(names, 5)
        extra = {"place": rng.choice(places), "object": rng.choice(objects)}
        order = "ABBA" if i % 2 == 0 else "BABA"
        clean, corrupt = _pair(template, io, s, fresh, extra, order, corruption)
        for key, value in zip(rows, (clean, corrupt, " " + io, " " + s)):
            rows[key].append(value)
        for key, value in zip(meta, (template, order, io, s)):
            meta[key].append(value)
    task = Task(
        name="ioi" if corruption == "abc" else f"ioi-{corruption}",
        **rows,
        meta={"generator": "ioi", "seed": seed, "corruption": corruption, **meta},
    )
    task.tokenize(tok, require_uniform=uniform)  # fail here, not in a later sweep
    return task


def _pair(
    template: str,
    io: str,
    s: str,
    fresh: list[str],
    extra: dict[str, str],
    order: str,
    corruption: str,
) -> tuple[str, str]:
    """The clean prompt in the given name order and its corrupted twin."""
    a, b = (io, s) if order == "ABBA" else (s, io)
    clean = template.format(A=a, B=b, S=s, **extra)
    if corruption == "abc":
        return clean, template.format(A=fresh[0], B=fresh[1], S=fresh[2], **extra)
    return clean, template.format(A=a, B=b, S=io, **extra)


def ioi_positions(
    task: Task, clean_tokens: torch.Tensor, tokenizer: Any
) -> dict[str, torch.Tensor]:
    """Each prompt's name positions in its clean tokens ``[batch pos]``, as ``[batch]`` tensors:
    ``IO`` (the indirect object), ``S1`` and ``S2`` (the subject's two mentions) and ``S2+1``
    (the token after S2). Templates put the names at different positions (``"Then, A and B"``,
    ABBA vs BABA), so sweeps over named positions read these rather than one column."""
    tok = need_tokenizer(tokenizer, "ioi")
    if "io" not in task.meta or "s" not in task.meta:
        raise MechscopeError(f"task {task.name!r} has no IOI names in its meta; build it with ioi")
    found: dict[str, list[int]] = {"IO": [], "S1": [], "S2": [], "S2+1": []}
    for i, (io, s) in enumerate(zip(task.meta["io"], task.meta["s"])):
        row = clean_tokens[i].tolist()
        io_id, s_id = (encode(tok, " " + name) for name in (io, s))
        at_io = [j for j, t in enumerate(row) if [t] == io_id]
        at_s = [j for j, t in enumerate(row) if [t] == s_id]
        if len(at_io) != 1 or len(at_s) != 2:
            raise MechscopeError(
                f"IOI prompt {i}: expected the IO name once and the subject twice as single tokens, "
                f"found {len(at_io)} and {len(at_s)}"
            )
        for key, value in zip(found, (at_io[0], at_s[0], at_s[1], at_s[1] + 1)):
            found[key].append(value)
    return {key: torch.tensor(value, dtype=torch.long) for key, value in found.items()}
