"""Built-in probing sets, generated from templates without a network (:data:`PROBE_SETS`).

Every example is read at its last token (position -1), and texts are cut so that the last token
is the one the label is about; in a causal LM the activation there depends only on that prefix.

- ``is_number``: "is this token part of a number?" Sentences about counting and buying, cut
  after a word that is a number (digits such as ``1987`` or words such as ``twelve``: label
  ``number``) or after an ordinary word (label ``word``); balanced.
- ``past_tense``: "is the sentence about a past event?" ``[time adverb,] name verb the object``
  with the verb in the past (``past``), present or future (``not_past``); the last token is the
  object noun (one of 218), which says nothing about the tense.
- ``plural``: "is the subject plural?" ``The keys near the cabinet``: the label is the number of
  the subject noun; the text ends on an attractor noun (one of 218, singular or plural at
  random) whose own number says nothing about the label.

Each generator takes ``n`` (examples) and ``seed`` and is deterministic.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from mechscope.probes.data import ProbeData

__all__ = ["PROBE_SETS", "is_number", "past_tense", "plural"]


def _words(text: str) -> list[str]:
    return text.split()


NAMES = _words(
    "Anna Ben Clara David Emma Felix Grace Henry Iris Jack Laura Marco Nina Oscar Paula Sam "
)
SUBJECTS = [
    *NAMES,
    "The farmer",
    "My uncle",
    "The teacher",
    "Our neighbour",
    "The baker",
    "She",
    "He",
]
COUNT_VERBS = _words("bought counted sold found saw painted carried ordered packed collected")
PLURAL_NOUNS = _words(
    "apples pears boxes chairs books bottles candles coins stamps shells cups plates tickets "
    "eggs lemons pencils shirts tiles nails cards letters flowers baskets bricks keys "
)
PLACES = [
    "at the market",
    "in the shop",
    "for the school",
    "near the station",
    "from the farm",
    "on the boat",
    "in the garden",
    "for the party",
]
NUMBER_WORDS = _words(
    "two three four five six seven eight nine ten eleven twelve fifteen twenty thirty forty fifty "
)
PLAIN_WORDS = _words("old small red fresh new cheap heavy broken wooden shiny")


def _number(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return rng.choice(NUMBER_WORDS)
    return str(rng.choice([rng.randint(2, 99), rng.randint(100, 999), rng.randint(1900, 2030)]))


def is_number(n: int = 400, seed: int = 0) -> ProbeData:
    """Cut template sentences after a number (``number``) or after a word (``word``)."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        count, price = _number(rng), _number(rng)
        words = [rng.choice(SUBJECTS), rng.choice(COUNT_VERBS), count, rng.choice(PLAIN_WORDS)]
        words += [rng.choice(PLURAL_NOUNS), rng.choice(PLACES), "for", price, "dollars"]
        numbers = {2, 7}  # indices of the number words
        want = i % 2 == 0  # alternate so the classes are balanced
        cut = rng.choice(sorted(numbers) if want else [1, 3, 4, 5, 6, 8])
        texts.append(" ".join(words[: cut + 1]))
        labels.append("number" if want else "word")
    return _data("is_number", texts, labels)


VERBS = [  # (base, past, third person present)
    ("walk", "walked", "walks"),
    ("paint", "painted", "paints"),
    ("clean", "cleaned", "cleans"),
    ("wash", "washed", "washes"),
    ("visit", "visited", "visits"),
    ("open", "opened", "opens"),
    ("fix", "fixed", "fixes"),
    ("carry", "carried", "carries"),
    ("watch", "watched", "watches"),
    ("build", "built", "builds"),
    ("sell", "sold", "sells"),
    ("buy", "bought", "buys"),
    ("see", "saw", "sees"),
    ("take", "took", "takes"),
    ("find", "found", "finds"),
    ("bring", "brought", "brings"),
    ("draw", "drew", "draws"),
    ("drive", "drove", "drives"),
    ("write", "wrote", "writes"),
    ("eat", "ate", "eats"),
]
# Many regular nouns (plural: + "s"): the last token of past_tense and plural texts is one of
# them, so the control task (a random label per last token) cannot be memorised from a few types.
_OBJECT_WORDS = """
anchor apple apron arrow axle badge bagel balloon banner barrel basket beacon bead bell belt
bottle bowl bracelet brick bridge broom bubble bucket bulb button cabin cabinet cable cake camel
camera candle canoe carpet cart castle cave chain chair chimney cloud coat coin collar comb
computer cookie cottage crayon crown cup curtain cushion desk diamond door dragon drawer drum
eagle engine envelope fan feather fence flag flower folder fountain frame garden gate giraffe
glove goat guitar hammer handle harbor hat helmet hill horn horse hotel island jacket jar jewel
kettle key kite ladder lamp lantern lemon letter lever lion magnet map marble market medal
mirror monkey motor mountain mug napkin necklace needle nest note ocean onion orange oven owl
paddle page pail painting pan panel paper parrot pebble pedal pen pencil piano picture pillow
pipe planet plate pocket pond poster pot puppet puzzle rabbit radio rail ring river road robot
rock rocket rope saddle sail sandal saucer scarf school screen seal shelter shield ship shirt
shoe shovel signal skirt sled slipper snake sock sofa spoon stamp star statue stone stool stove
street string sweater table tablet teapot tent ticket tiger tile toaster tower tractor trail
train tray tree truck trumpet tunnel turtle umbrella valley vase violin wagon wall wallet whale
wheel whistle window wing wire wizard yacht zebra
"""
OBJECTS = _words(_OBJECT_WORDS)
ADVERBS = {
    "past": ["Yesterday", "Last week", "Two days ago", "Last night", "Long ago", "In 1990"],
    "present": ["Every day", "Usually", "Today", "Most mornings", "Often"],
    "future": ["Tomorrow", "Next week", "Soon", "Next year", "Later tonight"],
}


def past_tense(n: int = 400, seed: int = 0) -> ProbeData:
    """``[adverb,] Name verb the adjective object``: ``past`` or ``not_past`` (present, future)."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        tense = "past" if i % 2 == 0 else rng.choice(["present", "future"])
        base, past, present = rng.choice(VERBS)
        verb = {"past": past, "present": present, "future": f"will {base}"}[tense]
        text = f"{rng.choice(NAMES)} {verb} the {rng.choice(PLAIN_WORDS)} {rng.choice(OBJECTS)}"
        if rng.random() < 0.5:  # half without an adverb: the verb alone carries the tense
            text = f"{rng.choice(ADVERBS[tense])}, {text}"
        texts.append(text)
        labels.append("past" if tense == "past" else "not_past")
    return _data("past_tense", texts, labels)


NOUNS = [  # (singular, plural)
    ("key", "keys"),
    ("dog", "dogs"),
    ("child", "children"),
    ("woman", "women"),
    ("man", "men"),
    ("book", "books"),
    ("letter", "letters"),
    ("teacher", "teachers"),
    ("cat", "cats"),
    ("bottle", "bottles"),
    ("painting", "paintings"),
    ("student", "students"),
    ("box", "boxes"),
    ("mouse", "mice"),
    ("bird", "birds"),
    ("lamp", "lamps"),
    ("chair", "chairs"),
    ("flower", "flowers"),
    ("doctor", "doctors"),
    ("plant", "plants"),
]
PREPOSITIONS = ["near", "behind", "next to", "beside", "under", "in front of", "above"]


def plural(n: int = 400, seed: int = 0) -> ProbeData:
    """``The subject preposition the attractor``: ``plural`` or ``singular`` subject."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        many = i % 2 == 0
        subject = rng.choice(NOUNS)[int(many)]
        attractor = rng.choice(OBJECTS) + rng.choice(["", "s"])
        texts.append(f"The {subject} {rng.choice(PREPOSITIONS)} the {attractor}")
        labels.append("plural" if many else "singular")
    return _data("plural", texts, labels)


def _data(name: str, texts: list[str], labels: list[str]) -> ProbeData:
    n = len(texts)
    return ProbeData(
        name=f"builtin:{name}",
        texts=tuple(texts),
        labels=tuple(labels),
        positions=(-1,) * n,
        tokens=(None,) * n,
        lines=tuple(range(1, n + 1)),
    )


PROBE_SETS: dict[str, Callable[..., ProbeData]] = {
    "is_number": is_number,
    "past_tense": past_tense,
    "plural": plural,
}
