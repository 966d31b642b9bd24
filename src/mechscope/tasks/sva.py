"""Subject-verb agreement across an attractor noun (Linzen et al. 2016).

"The key near the cabinets" -> " is", not " are": the verb must agree in number with the subject
("key"), not with the nearer attractor noun ("cabinets"). The answer is the agreeing verb and the
wrong token the other form. The corrupted prompt flips the subject's number ("The keys near the
cabinets"), so the right verb flips too; the attractor's number is random and the same in both.

Nouns are kept only if singular and plural are each one token with a leading space, so flipping
the number keeps the token length; ``uniform=True`` keeps only the templates of the most common
length.
"""

from __future__ import annotations

import random
from typing import Any

from mechscope.errors import MechscopeError
from mechscope.tasks.base import Task
from mechscope.tasks.vocab import (
    check_n,
    check_pool,
    largest_group,
    n_tokens,
    need_tokenizer,
    word_pairs,
)

TEMPLATES = (
    "The {subject} near the {attractor}",
    "The {subject} behind the {attractor}",
    "The {subject} of the {attractor}",
    "The {subject} with the {attractor}",
    "The {subject} beside the {attractor}",
    "The {subject} next to the {attractor}",
)
NOUNS = word_pairs(
    "key:keys book:books dog:dogs cat:cats car:cars house:houses tree:trees teacher:teachers "
    "student:students boy:boys girl:girls man:men woman:women child:children doctor:doctors "
    "table:tables chair:chairs letter:letters picture:pictures friend:friends bird:birds "
    "window:windows door:doors farmer:farmers king:kings player:players officer:officers "
    "box:boxes bottle:bottles painting:paintings author:authors lawyer:lawyers river:rivers "
    "road:roads garden:gardens building:buildings computer:computers phone:phones "
    "horse:horses machine:machines manager:managers worker:workers soldier:soldiers "
    "cabinet:cabinets lamp:lamps"
)
VERBS = (" is", " are")


def make_sva(
    tokenizer: Any,
    n: int,
    seed: int = 0,
    *,
    uniform: bool = True,
    templates: tuple[str, ...] = TEMPLATES,
) -> Task:
    """``n`` agreement prompts, alternating singular and plural subjects; answer = agreeing verb."""
    check_n(n, "sva")
    tok = need_tokenizer(tokenizer, "sva")
    for verb in VERBS:
        if n_tokens(tok, verb) != 1:
            raise MechscopeError(f"sva needs {verb!r} to be one token; this tokenizer splits it")
    nouns = [p for p in NOUNS if all(n_tokens(tok, " " + w) == 1 for w in p)]
    check_pool(nouns, 2, "sva", "singular/plural noun pairs")
    if uniform:
        fill = {"subject": nouns[0][0], "attractor": nouns[1][0]}
        templates = tuple(largest_group(templates, lambda t: n_tokens(tok, t.format(**fill))))
    rng = random.Random(seed)
    rows: dict[str, list[Any]] = {k: [] for k in ("clean", "corrupt", "answer", "wrong")}
    meta: dict[str, list[Any]] = {"template": [], "plural": [], "attractor_plural": []}
    for i in range(n):
        template = rng.choice(templates)
        subject, attractor = rng.sample(nouns, 2)
        plural, attractor_plural = i % 2, rng.randrange(2)
        other = attractor[attractor_plural]
        rows["clean"].append(template.format(subject=subject[plural], attractor=other))
        rows["corrupt"].append(template.format(subject=subject[1 - plural], attractor=other))
        rows["answer"].append(VERBS[plural])
        rows["wrong"].append(VERBS[1 - plural])
        for key, value in zip(meta, (template, bool(plural), bool(attractor_plural))):
            meta[key].append(value)
    task = Task(name="sva", **rows, meta={"generator": "sva", "seed": seed, **meta})
    task.tokenize(tok, require_uniform=uniform)  # fail here, not in a later sweep
    return task
