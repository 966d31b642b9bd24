"""Which form of MCQA does the built-in model do? Choose on dev items, report on held-out items.

    python benchmarks/probe_mcqa.py [--n-dev 24] [--n-test 64] [--json OUT]

Every form of :func:`mechscope.tasks.mcqa.make_mcqa` in the grid (solved items 0/1/3, plain or
chat template, 2 or 4 choices, letters " A" / "A" / "(A)", colour items; then the best forms
with the other item type and with an instruction line) is scored on ``--n-dev`` items whose subjects are the dev half of
the subject list: the clean logit difference of the right letter against the mean of the other
offered letters, choice accuracy (argmax among the offered letters) and top-1 accuracy (argmax
over the vocabulary). The form with the highest dev logit difference is chosen; it and the
runners-up and MIB's plain form are then scored on ``--n-test`` items whose subjects are the other
half (never seen in choosing), with 95% bootstrap intervals, and the symbol counterfactual's
logit difference (right letter minus the letter the right answer moved to) on clean and
corrupted prompts.
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
from mechscope.tasks.mcqa import make_mcqa  # noqa: E402
from mechscope.tasks.metrics import last_logits, logit_diff  # noqa: E402

MIB_FORM = {"shots": 1, "choices": 4, "letters": "space", "chat": False, "items": "color"}


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
        "tokens": int(batch.clean_mask.sum(1).float().mean()),
        # how often the model picks its favourite letter (1.0: the same letter every time)
        "favourite": [float(among.argmax(1).bincount().max()) / n],
    }
    if corrupt:
        logits = run(model, batch.corrupt_tokens, batch.corrupt_mask)
        out["ld_symbol_corrupt"] = logit_diff(logits, batch.flipped()).tolist()
    return out


def summary(values: dict) -> dict:
    res = {"tokens": values["tokens"], "favourite": values["favourite"][0]}
    for key, v in values.items():
        if key not in res:
            lo, hi = bootstrap_ci(torch.tensor(v).numpy())
            res[key] = [sum(v) / len(v), float(lo), float(hi)]
    return res


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
    grid = [dict(zip(("shots", "chat", "choices", "letters"), v))
            for v in itertools.product((0, 1, 3), (False, True), (2, 4), ("space", "bare", "paren"))]  # fmt: skip
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
        print(f"     symbol counterfactual LD: clean {sym[0]:.2f} [{sym[1]:.2f}, {sym[2]:.2f}], "
              f"corrupted {cor[0]:.2f} [{cor[1]:.2f}, {cor[2]:.2f}]", flush=True)  # fmt: skip
    cpu = time.process_time() - cpu0
    print(f"{cpu:.0f} CPU-s")
    if args.json:
        out = {"machine": machine(device), "n_dev": args.n_dev, "n_test": args.n_test,
               "chosen": chosen, "cpu_seconds": cpu,
               "dev": [{"form": f, **s} for f, s in dev],
               "test": [{"form": f, **s} for f, s in test]}  # fmt: skip
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
