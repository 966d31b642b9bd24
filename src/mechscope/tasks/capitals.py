"""Capital cities: factual recall of a subject's attribute (Meng et al. 2022, ROME).

"The capital of France is" -> " Paris". The corrupted prompt names another country with the same
number of tokens ("The capital of Spain is"), and the wrong token is that country's capital
(" Madrid"), so the clean run prefers the answer and the corrupted run the wrong token: patching
measures where the fact about the subject is recalled.

Only pairs whose capital is one token with a leading space are kept (capitals that share the
country's name, or whose first token is not the whole name, are left out of the list);
``uniform=True`` keeps only countries of the most common token length.
"""

from __future__ import annotations

import random
from typing import Any

from mechscope.tasks.base import Task
from mechscope.tasks.vocab import (
    check_n,
    check_pool,
    largest_group,
    n_tokens,
    need_tokenizer,
    word_pairs,
)

TEMPLATE = "The capital of {country} is"
CAPITALS = word_pairs(
    "France:Paris Germany:Berlin Italy:Rome Spain:Madrid Japan:Tokyo China:Beijing "
    "Russia:Moscow Egypt:Cairo Greece:Athens England:London Canada:Ottawa "
    "Australia:Canberra Austria:Vienna Poland:Warsaw Portugal:Lisbon Ireland:Dublin "
    "Sweden:Stockholm Norway:Oslo Finland:Helsinki Denmark:Copenhagen Hungary:Budapest "
    "Belgium:Brussels Netherlands:Amsterdam Switzerland:Bern Turkey:Ankara Thailand:Bangkok "
    "Kenya:Nairobi Peru:Lima Chile:Santiago Cuba:Havana Iran:Tehran Iraq:Baghdad "
    "Syria:Damascus Lebanon:Beirut Afghanistan:Kabul Pakistan:Islamabad Vietnam:Hanoi "
    "Indonesia:Jakarta Philippines:Manila Korea:Seoul Romania:Bucharest Bulgaria:Sofia "
    "Serbia:Belgrade Scotland:Edinburgh Wales:Cardiff Colombia:Bogota Venezuela:Caracas "
    "Nigeria:Abuja Ghana:Accra Morocco:Rabat Tunisia:Tunis Algeria:Algiers Libya:Tripoli "
    "Sudan:Khartoum Zimbabwe:Harare Uganda:Kampala Nepal:Kathmandu Taiwan:Taipei "
    "Jamaica:Kingston Iceland:Reykjavik Latvia:Riga Lithuania:Vilnius Croatia:Zagreb "
    "Georgia:Tbilisi Armenia:Yerevan Azerbaijan:Baku Qatar:Doha Oman:Muscat Jordan:Amman "
    "Senegal:Dakar Zambia:Lusaka Angola:Luanda"
)


def make_capitals(
    tokenizer: Any,
    n: int,
    seed: int = 0,
    *,
    uniform: bool = True,
) -> Task:
    """``n`` capital-city prompts; corrupted = another country, wrong = that country's capital."""
    tok = need_tokenizer(tokenizer, "capitals")
    pairs = [(c, cap) for c, cap in CAPITALS if n_tokens(tok, " " + cap) == 1]
    if uniform:
        pairs = largest_group(pairs, lambda p: n_tokens(tok, " " + p[0]))
    length = {c: n_tokens(tok, " " + c) for c, _ in pairs}
    # a country needs another of its token length to corrupt it into
    pairs = [p for p in pairs if sum(length[q[0]] == length[p[0]] for q in pairs) > 1]
    check_pool(pairs, 2, "capitals", "capitals")
    check_n(n, "capitals", len(pairs), "countries")
    rng = random.Random(seed)
    rows: dict[str, list[Any]] = {k: [] for k in ("clean", "corrupt", "answer", "wrong")}
    meta: dict[str, list[str]] = {"country": [], "other": []}
    for country, capital in rng.sample(pairs, n):
        twins = [p for p in pairs if p[0] != country and length[p[0]] == length[country]]
        other, other_capital = rng.choice(twins)
        rows["clean"].append(TEMPLATE.format(country=country))
        rows["corrupt"].append(TEMPLATE.format(country=other))
        rows["answer"].append(" " + capital)
        rows["wrong"].append(" " + other_capital)
        meta["country"].append(country)
        meta["other"].append(other)
    task = Task(name="capitals", **rows, meta={"generator": "capitals", "seed": seed, **meta})
    task.tokenize(tok, require_uniform=uniform)  # fail here, not in a later sweep
    return task
