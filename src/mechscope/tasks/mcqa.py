"""Multiple-choice answer selection (MCQA) in MIB's form, with mechscope's own items.

MIB's MCQA task (after Wiegreffe et al. 2025, "Answer, assemble, ace") states a fact and asks for
it back among lettered choices: "Question: The ball is red. What color is the ball?\\nA. blue\\nB.
red\\nC. green\\nD. pink\\nAnswer:" -> " B". As in MIB's symbol counterfactual, the corrupted
prompt is the same question with the right answer swapped with another choice, so it sits under
another letter: the wrong token is that letter, and a circuit must carry *which letter*, not the
colour. ``meta`` records the subject, the right answer, the clean prompt's options and both
answer positions.

The form is a set of options, so that the one a model does can be found (see
``benchmarks/probe_mcqa.py`` and docs/causal.md):

- ``shots``: 0-8 solved items before the question (fixed items, answers under varied letters);
- ``choices``: 2-4 lettered choices;
- ``letters``: ``"space"`` (the answer is " B" after "Answer:"), ``"bare"`` ("B" after
  "Answer:\\n", or first in a chat reply) or ``"paren"`` (choices "(A) red", the answer "B" after
  "Answer: (", or after "(" in a chat reply);
- ``chat``: the question (and each solved item) as a user turn of the tokenizer's chat template,
  the answer as the assistant's reply;
- ``items``: ``"color"`` (MIB's: the colour of an object) or ``"place"`` ("Anna is in the
  kitchen. Where is Anna?"), both copied from the context;
- ``instruction``: each question starts with "Answer with the letter of the correct choice.";
- ``split``: ``"dev"`` / ``"test"`` draw subjects from disjoint halves of the subject list (choose
  a form on one, report on the other); None uses all.

The built-in ``mcqa`` (the defaults) is MIB's plain form with one solved item. SmolLM2-135M-Instruct
does none of the forms: it answers one letter whatever the question (docs/causal.md, "MCQA on the
built-in model"). The letter of the right answer is balanced over the items, so a constant letter
preference cancels in the mean logit difference.
"""

from __future__ import annotations

import random
from typing import Any

from mechscope.errors import MechscopeError
from mechscope.tasks.base import Task
from mechscope.tasks.vocab import check_n, check_pool, encode, need_tokenizer, one_token, words

LETTERS = ("A", "B", "C", "D")
LETTER_FORMS = ("space", "bare", "paren")
INSTRUCTION = "Answer with the letter of the correct choice.\n"
ITEMS = {
    "color": (
        words("ball car hat cup book box pen shirt door chair bag lamp kite bike boat shoe"),
        words("red blue green yellow black white brown pink purple orange gray"),
        "The {s} is {a}. What color is the {s}?",
    ),
    "place": (
        words("Mary John Anna Tom Sarah James Emma David Lucy Mark Kate Paul Alice Peter Jane Sam"),
        words("kitchen garden bedroom office park school library bathroom garage shop beach"),
        "{s} is in the {a}. Where is {s}?",
    ),
}
# Solved items shown before the question: (subject, choices, index of the right one).
SHOTS = {
    "color": (
        ("tree", ("red", "green", "blue", "white"), 1),
        ("sky", ("blue", "brown", "black", "yellow"), 0),
        ("apple", ("pink", "white", "orange", "red"), 3),
        ("grass", ("yellow", "purple", "green", "black"), 2),
        ("snow", ("white", "red", "gray", "blue"), 0),
        ("banana", ("brown", "yellow", "pink", "green"), 1),
        ("coal", ("orange", "blue", "white", "black"), 3),
        ("cloud", ("green", "black", "white", "purple"), 2),
    ),
    "place": (
        ("Ben", ("hall", "farm", "church", "zoo"), 1),
        ("Lisa", ("farm", "zoo", "hall", "church"), 0),
        ("Max", ("church", "hall", "zoo", "farm"), 3),
        ("Tim", ("museum", "bank", "zoo", "hotel"), 2),
        ("Rose", ("market", "station", "church", "farm"), 0),
        ("Adam", ("hotel", "museum", "market", "bank"), 1),
        ("Eva", ("zoo", "church", "station", "hall"), 3),
        ("Nick", ("station", "hotel", "bank", "farm"), 2),
    ),
}


MAX_SHOTS = 8


def _choice_lines(options: tuple[str, ...] | list[str], letters: str) -> str:
    if letters == "paren":
        return "".join(f"\n({x}) {c}" for x, c in zip(LETTERS, options))
    return "".join(f"\n{x}. {c}" for x, c in zip(LETTERS, options))


def _answer_text(letter: str, letters: str) -> tuple[str, str]:
    """(the cue the prompt ends with, the answer token) of a plain prompt."""
    return {"space": ("Answer:", " " + letter), "bare": ("Answer:\n", letter),
            "paren": ("Answer: (", letter)}[letters]  # fmt: skip


def _chat_answer(letter: str, letters: str) -> tuple[str, str]:
    """(the start of the assistant's reply, the answer token) of a chat prompt."""
    return {"space": ("Answer:", " " + letter), "bare": ("", letter),
            "paren": ("(", letter)}[letters]  # fmt: skip


class _Form:
    """Renders one question (with its solved items) in a chosen form."""

    def __init__(self, tok: Any, shots: int, choices: int, letters: str, chat: bool, items: str,
                 instruction: bool):  # fmt: skip
        self.tok, self.choices, self.letters, self.chat = tok, choices, letters, chat
        self.instruction = INSTRUCTION if instruction else ""
        self.template = ITEMS[items][2]
        self.shots = []
        for subject, options, right in SHOTS[items][:shots]:
            # keep the right option and the first others; the answer's letter varies by shot
            others = [c for i, c in enumerate(options) if i != right][: choices - 1]
            pos = right % choices
            kept = others[:pos] + [options[right]] + others[pos:]
            self.shots.append((self.question(subject, options[right], kept), LETTERS[pos]))

    def question(self, subject: str, answer: str, options: list[str]) -> str:
        text = self.template.format(s=subject, a=answer)
        return f"{self.instruction}Question: {text}{_choice_lines(options, self.letters)}"

    def prompt(self, subject: str, answer: str, options: list[str]) -> str:
        question = self.question(subject, answer, options)
        if self.chat:
            messages = []
            for q, letter in self.shots:
                cue, token = _chat_answer(letter, self.letters)
                close = ")" if self.letters == "paren" else ""
                messages += [{"role": "user", "content": q},
                             {"role": "assistant", "content": cue + token + close}]  # fmt: skip
            messages.append({"role": "user", "content": question})
            head = self.tok.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
            return head + _chat_answer("A", self.letters)[0]
        solved = ""
        for q, letter in self.shots:
            cue, token = _answer_text(letter, self.letters)
            solved += f"{q}\n{cue}{token}{')' if self.letters == 'paren' else ''}\n\n"
        return f"{solved}{question}\n{_answer_text('A', self.letters)[0]}"

    def token(self, pos: int) -> str:
        return _answer_text(LETTERS[pos], self.letters)[1]


def _check(tok: Any, shots: int, choices: int, letters: str, chat: bool, items: str) -> None:
    if not 0 <= shots <= MAX_SHOTS:
        raise MechscopeError(f"mcqa shots must be 0-{MAX_SHOTS}, got {shots}")
    if not 2 <= choices <= 4:
        raise MechscopeError(f"mcqa choices must be 2-4, got {choices}")
    if letters not in LETTER_FORMS:
        raise MechscopeError(
            f"mcqa letters must be one of {', '.join(LETTER_FORMS)}, got {letters!r}"
        )
    if items not in ITEMS:
        raise MechscopeError(f"mcqa items must be one of {', '.join(ITEMS)}, got {items!r}")
    if chat and not getattr(tok, "chat_template", None):
        raise MechscopeError(
            "mcqa chat=True needs a tokenizer with a chat template; use chat=False"
        )
    prefix = " " if letters == "space" else ""
    if any(len(encode(tok, prefix + x)) != 1 for x in LETTERS[:choices]):
        raise MechscopeError(
            f"mcqa letters={letters!r} needs {prefix!r} + 'A' .. 'D' to be one token each for "
            "this tokenizer; choose another letters form"
        )


def make_mcqa(
    tokenizer: Any,
    n: int,
    seed: int = 0,
    *,
    shots: int = 1,
    choices: int = 4,
    letters: str = "space",
    chat: bool = False,
    items: str = "color",
    instruction: bool = False,
    split: str | None = None,
) -> Task:
    """``n`` multiple-choice questions with the symbol counterfactual (see the module docstring)."""
    check_n(n, "mcqa")
    tok = need_tokenizer(tokenizer, "mcqa")
    _check(tok, shots, choices, letters, chat, items)
    subjects, answers, _ = ITEMS[items]
    subjects = one_token(tok, subjects)
    if split is not None:
        if split not in ("dev", "test"):
            raise MechscopeError(f"mcqa split must be 'dev', 'test' or None, got {split!r}")
        subjects = subjects[split == "test" :: 2]
    answers = one_token(tok, answers)
    check_pool(subjects, 1, "mcqa", "subjects")
    check_pool(answers, choices, "mcqa", "answers")
    form = _Form(tok, shots, choices, letters, chat, items, instruction)
    rng = random.Random(seed)
    rows: dict[str, list[Any]] = {k: [] for k in ("clean", "corrupt", "answer", "wrong")}
    keys = ("subject", "right", "options", "answer_pos", "corrupt_pos")
    meta: dict[str, list[Any]] = {k: [] for k in keys}
    places = [i % choices for i in range(n)]  # each letter right equally often (a constant
    rng.shuffle(places)  # letter preference then cancels in the mean logit difference)
    for pos in places:
        subject, options = rng.choice(subjects), rng.sample(answers, choices)
        cpos = rng.choice([i for i in range(choices) if i != pos])
        moved = list(options)
        moved[pos], moved[cpos] = moved[cpos], moved[pos]  # the right answer moves to cpos
        rows["clean"].append(form.prompt(subject, options[pos], options))
        rows["corrupt"].append(form.prompt(subject, options[pos], moved))
        rows["answer"].append(form.token(pos))
        rows["wrong"].append(form.token(cpos))
        for key, value in zip(keys, (subject, options[pos], options, pos, cpos)):
            meta[key].append(value)
    options = {"shots": shots, "choices": choices, "letters": letters, "chat": chat,
               "items": items, "instruction": instruction, "split": split}  # fmt: skip
    task = Task(name="mcqa", **rows, meta={"generator": "mcqa", "seed": seed, **options, **meta})
    task.tokenize(tok)  # fail here (an unequal pair names itself), not in a later sweep
    return task
