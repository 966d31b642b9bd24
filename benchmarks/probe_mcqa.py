"""Which form of MCQA does the built-in model do? Choose on dev items, report on held-out items.

    python benchmarks/probe_mcqa.py [--n-dev 24] [--n-test 64] [--json OUT]

Every form of :func:`mechscope.tasks.mcqa.make_mcqa` in the grid (by default solved items
0/1/3, plain or chat template, 2 or 4 choices, letters " A" / "A" / "(A)", colour items; then the best forms
with the other item type and with an instruction line) is scored on ``--n-dev`` items whose subjects are the dev half of
the subject list: the clean logit difference of the right letter against the mean of the other
offered letters, choice accuracy (argmax among the offered letters) and top-1 accuracy (argmax
over the vocabulary). The form with the highest dev logit difference is chosen; it and the
runners-up and MIB's plain form are then scored on ``--n-test`` items whose subjects are the other
half (never seen in choosing), with 95% bootstrap intervals, and the symbol counterfactual's
logit difference (right letter minus the letter the right answer moved to) on clean and
corrupted prompts. A control at the same position: the logit of the right answer's *content*
(" red") against the other offered contents; and a cloze control, the question without choices
("...What color is the ball?\nAnswer:" -> " red"): whether the model reads the fact at all.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mechscope  # noqa: E402
from machine import add_device_option, device_label, machine, pick_device  # noqa: E402
from mechscope.stats import bootstrap_ci  # noqa: E402
from mechscope.tasks.mcqa import ITEMS, make_mcqa  # noqa: E402
from mechscope.tasks.metrics import last_logits, logit_diff  # noqa: E402

MIB_FORM = {"shots": 1, "choices": 4, "letters": "space", "chat": False, "items": "color"}
CLOZE_FORM = {"shots": 0, "choices": 4, "letters": "space", "chat": False}


def run(model, tokens, mask, chunk: int = 16) -> torch.Tensor:
    with torch.no_grad():
        parts = [model(tokens[i : i + chunk], mask[i : i + chunk]) for i in range(0, len(tokens), chunk)]  # fmt: skip
    return torch.cat(parts)


def score(model, form: dict, n: int, split: str, corrupt: bool = False) -> dict:
    """Per-item metrics of one form on ``n`` items of ``split``."""
    task = make_mcqa(model.tokenizer, n, seed=0 if split == "dev" else 1, split=split, **form)
    batch = task.tokenize(model)
    letters = [task.answer[i] for i in range(n)] + [task.wrong[i] for i in range(n)]
    offered = sorted(
        {model.tokenizer(x, add_special_tokens=False)["input_ids"][0] for x in letters}
    )
    offered = torch.tensor(offered)
    last = last_logits(run(model, batch.clean_tokens, batch.clean_mask), batch)
    right = last.gather(1, batch.answer_ids[:, None])[:, 0]
    among = last[:, offered]
    others = (among.sum(1) - right) / (len(offered) - 1)
    out = {
        "ld_others": (right - others).tolist(),
        "choice_acc": (offered[among.argmax(1)] == batch.answer_ids).float().tolist(),
        "top1": (last.argmax(1) == batch.answer_ids).float().tolist(),
        "ld_symbol": (right - last.gather(1, batch.wrong_ids[:, None])[:, 0]).tolist(),
        # the content instead of the letter: " red" against the other offered colours
        "ld_content": content_ld(model.tokenizer, task, last).tolist(),
        "tokens": int(batch.clean_mask.sum(1).float().mean()),
        # how often the model picks its favourite letter (1.0: the same letter every time)
        "favourite": [float(among.argmax(1).bincount().max()) / n],
    }
    if corrupt:
        logits = run(model, batch.corrupt_tokens, batch.corrupt_mask)
        out["ld_symbol_corrupt"] = logit_diff(logits, batch.flipped()).tolist()
    return out


def content_ld(tok, task, last: torch.Tensor) -> torch.Tensor:
    """[item]: logit of " " + the right answer minus the mean of the other offered answers."""
    out = []
    for i, (right, options) in enumerate(zip(task.meta["right"], task.meta["options"])):
        ids = [tok(" " + o, add_special_tokens=False)["input_ids"][0] for o in options]
        values = last[i, ids]
        r = values[options.index(right)]
        out.append(r - (values.sum() - r) / (len(ids) - 1))
    return torch.stack(out)


def cloze(model, n: int, items: str) -> dict:
    """The question without choices ("...What color is the ball?\\nAnswer:"): does the model
    say the right content (" red") rather than the distractors a choice list would offer?"""
    task = make_mcqa(model.tokenizer, n, seed=1, split="test", items=items, **CLOZE_FORM)
    template = ITEMS[items][2]
    prompts = [f"Question: {template.format(s=s, a=a)}\nAnswer:"
               for s, a in zip(task.meta["subject"], task.meta["right"])]  # fmt: skip
    enc = model.tokenizer(
        prompts, add_special_tokens=False, padding=True, padding_side="right", return_tensors="pt"
    )
    logits = run(model, enc["input_ids"], enc["attention_mask"])
    last_pos = enc["attention_mask"].sum(1) - 1
    last = logits[torch.arange(n), last_pos].float()
    ld = content_ld(model.tokenizer, task, last)
    right = [model.tokenizer(" " + r, add_special_tokens=False)["input_ids"][0]
             for r in task.meta["right"]]  # fmt: skip
    top1 = (last.argmax(1) == torch.tensor(right)).float()
    lo, hi = bootstrap_ci(ld.numpy())
    return {"ld_content": [float(ld.mean()), float(lo), float(hi)], "top1": float(top1.mean())}


def summary(values: dict) -> dict:
    res = {"tokens": values["tokens"], "favourite": values["favourite"][0]}
    for key, v in values.items():
        if key not in res:
            lo, hi = bootstrap_ci(torch.tensor(v).numpy())
            res[key] = [sum(v) / len(v), float(lo), float(hi)]
    return res


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def name(form: dict) -> str:
    return (f"{form['items']} {'chat' if form['chat'] else 'plain'} {form['shots']}-shot "
            f"{form['choices']}-choice {form['letters']}"
            f"{' +instruction' if form.get('instruction') else ''}")  # fmt: skip


def show(tag: str, form: dict, s: dict) -> None:
    ld, acc, top = s["ld_others"], s["choice_acc"], s["top1"]
    print(f"{tag} {name(form):40s} LD {ld[0]:6.2f} [{ld[1]:5.2f}, {ld[2]:5.2f}]  choice acc "
          f"{acc[0]:.2f} [{acc[1]:.2f}, {acc[2]:.2f}]  top-1 {top[0]:.2f}  favourite letter "
          f"{s['favourite']:.2f}  ({s['tokens']} tok)",
          flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-dev", type=int, default=24)
    parser.add_argument("--n-test", type=int, default=64)
    parser.add_argument("--top", type=int, default=3, help="dev forms carried to the test split")
    parser.add_argument("--shots", default="0,1,3", help="the grid: solved items")
    parser.add_argument("--chat", default="0,1", help="the grid: 0 plain, 1 chat template")
    parser.add_argument("--choices", default="2,4", help="the grid: numbers of choices")
    parser.add_argument("--letters", default="space,bare,paren", help="the grid: letter forms")
    parser.add_argument("--json")
    add_device_option(parser)
    args = parser.parse_args()
    device = pick_device(args.device)
    if device.type != "cpu":
        raise SystemExit("error: this probe runs on the CPU only; use --device cpu")
    torch.set_num_threads(1)
    print(f"device {device_label(device)}", machine(device))
    model = mechscope.load("smollm2-135m", progress=False)
    cpu0 = time.process_time()
    axes = (ints(args.shots), [bool(v) for v in ints(args.chat)], ints(args.choices),
            args.letters.split(","))  # fmt: skip
    grid = [dict(zip(("shots", "chat", "choices", "letters"), v)) for v in itertools.product(*axes)]
    dev = []
    for form in grid:
        form = {**form, "items": "color"}
        s = summary(score(model, form, args.n_dev, "dev"))
        dev.append((form, s))
        show("dev", form, s)
    best = sorted(dev, key=lambda fs: -fs[1]["ld_others"][0])[: args.top]
    for form, _ in best:  # the same forms with the other item type, and with an instruction
        for change in ({"items": "place"}, {"instruction": True},
                       {"items": "place", "instruction": True}):  # fmt: skip
            form2 = {**form, **change}
            s = summary(score(model, form2, args.n_dev, "dev"))
            dev.append((form2, s))
            show("dev", form2, s)
    ranked = sorted(dev, key=lambda fs: -fs[1]["ld_others"][0])
    chosen = ranked[0][0]
    print(f"chosen on dev: {name(chosen)}", flush=True)
    test = []
    for form in [f for f, _ in ranked[: args.top]] + [MIB_FORM]:
        s = summary(score(model, form, args.n_test, "test", corrupt=True))
        test.append((form, s))
        show("test", form, s)
        sym, cor = s["ld_symbol"], s["ld_symbol_corrupt"]
        c = s["ld_content"]
        print(f"     the answer's content instead of its letter (' red' vs the other options): "
              f"{c[0]:.2f} [{c[1]:.2f}, {c[2]:.2f}]", flush=True)  # fmt: skip
        print(f"     symbol counterfactual LD: clean {sym[0]:.2f} [{sym[1]:.2f}, {sym[2]:.2f}], "
              f"corrupted {cor[0]:.2f} [{cor[1]:.2f}, {cor[2]:.2f}]", flush=True)  # fmt: skip
    controls = {items: cloze(model, args.n_test, items) for items in ITEMS}
    for items, c in controls.items():
        ld = c["ld_content"]
        print(f"cloze control ({items}, no choices, 0-shot): right content vs the 3 others "
              f"{ld[0]:.2f} [{ld[1]:.2f}, {ld[2]:.2f}], top-1 {c['top1']:.2f}", flush=True)  # fmt: skip
    cpu = time.process_time() - cpu0
    print(f"{cpu:.0f} CPU-s")
    if args.json:
        out = {"machine": machine(device), "n_dev": args.n_dev, "n_test": args.n_test,
               "chosen": chosen, "cpu_seconds": cpu, "cloze": controls,
               "dev": [{"form": f, **s} for f, s in dev],
               "test": [{"form": f, **s} for f, s in test]}  # fmt: skip
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
