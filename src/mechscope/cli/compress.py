"""``mechscope compress``: circuit-guided mixed-precision quantization of a model to a folder.

The folder loads with ``transformers.AutoModelForCausalLM.from_pretrained(DIR)`` and, from its
packed codes, with ``mechscope.load(DIR)``; see docs/compression.md.
"""

from __future__ import annotations

from pathlib import Path

import click

from mechscope import DEFAULT_MODEL
from mechscope.cli.common import load_model, quiet_option, write_json


@click.command()
@click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True)
@click.option(
    "--bits",
    type=float,
    required=True,
    help="Average effective bits per decoder-layer Linear weight (scales included).",
)
@click.option(
    "--protect",
    default="",
    help="Tasks to protect, comma-separated (ioi,induction "
    "or .jsonl files); needed by the circuit method.",
)
@click.option(
    "--method",
    default="circuit",
    show_default=True,
    help="circuit, uniform, random, awq, fisher, taylor, layer or shuffled.",
)
@click.option("--quantizer", default="rtn", show_default=True, help="rtn or gptq.")
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False),
    help="New folder for the compressed model.",
)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write JSON here.")
@click.option("--group-size", default=64, show_default=True, help="Input columns per group.")
@click.option("--prompts", default=16, show_default=True, help="Prompts per protected task.")
@click.option("--calib-tokens", default=8192, show_default=True, help="Calibration tokens.")
@click.option("--seq-len", default=128, show_default=True, help="Calibration window length.")
@click.option(
    "--importance",
    default="eap-ig",
    show_default=True,
    help="eap-ig (node scores on weight slices) or gradient (the tasks' Fisher).",
)
@click.option(
    "--task-weight",
    type=float,
    default=None,
    help="Weight of the tasks' term (default 0.1 for eap-ig, 1.0 for gradient).",
)
@click.option("--lm-weight", default=1.0, show_default=True, help="Weight of the general term.")
@click.option(
    "--corpus",
    default=None,
    help="Calibration text: a file or folder (default: the built-in corpus).",
)
@click.option(
    "--prune",
    default=0.0,
    show_default=True,
    help="Fraction of heads and of MLP neurons to prune (structured; their bits go to the rest).",
)
@click.option(
    "--prune-neurons",
    default=0.0,
    show_default=True,
    help="Fraction of MLP neurons to prune by their removal Fisher (LM + protected tasks), "
    "their bits going to the rest (not with --prune).",
)
@click.option("--seed", default=0, show_default=True)
@quiet_option
def compress(
    model: str,
    bits: float,
    protect: str,
    method: str,
    quantizer: str,
    out: str,
    json_out: str | None,
    group_size: int,
    prompts: int,
    calib_tokens: int,
    seq_len: int,
    importance: str,
    task_weight: float | None,
    lm_weight: float,
    corpus: str | None,
    prune: float,
    prune_neurons: float,
    seed: int,
    quiet: bool,
) -> None:
    """Quantize a model to BITS effective bits, keeping the protected tasks' circuits."""  # fmt: skip
    from mechscope.compress import CompressConfig
    from mechscope.compress import compress as run
    from mechscope.errors import MechscopeError

    if Path(out).exists():
        raise MechscopeError(f"output folder {out} exists; pass a new --out folder")
    tasks = tuple(t.strip() for t in protect.split(",") if t.strip())
    config = CompressConfig(
        bits=bits, protect=tasks, method=method, quantizer=quantizer, group_size=group_size,
        n_prompts=prompts, calib_tokens=calib_tokens, seq_len=seq_len, task_weight=task_weight,
        lm_weight=lm_weight, seed=seed, importance=importance, corpus=corpus, prune=prune,
        prune_neurons=prune_neurons,
    )  # fmt: skip
    hooked = load_model(model, quiet=quiet)
    result = run(hooked, config, out=out, quiet=quiet)
    payload = {"model": model, **result.to_dict()}
    write_json(json_out, payload)
    sizes = result.export["sizes"] if result.export else {}
    hist = "  ".join(f"{b}-bit {100 * s:.1f}%" for b, s in result.histogram()["all"].items())
    click.echo(f"{result.effective_bits:.3f} effective bits over {result.layout.numel:,} weights "
               f"(recounted from the weights: {result.recount.effective_bits:.3f})")  # type: ignore[union-attr]  # fmt: skip
    click.echo(f"widths: {hist}")
    click.echo(f"wrote {out}: packed.safetensors {sizes.get('packed.safetensors', 0) / 1e6:.1f} MB, "
               f"model.safetensors {sizes.get('model.safetensors', 0) / 1e6:.1f} MB")  # fmt: skip
