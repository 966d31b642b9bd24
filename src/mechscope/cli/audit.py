"""``mechscope audit``: the interpretability audit of a model as one HTML file and its PDF."""

from __future__ import annotations

import click

from mechscope import DEFAULT_MODEL
from mechscope.cli.common import load_model, quiet_option
from mechscope.errors import MechscopeError

DEFAULT_BITS = "4.5,3.5"


def _names(text: str, what: str) -> tuple[str, ...]:
    names = tuple(p.strip() for p in text.split(",") if p.strip())
    if not names:
        raise MechscopeError(f"{what} is empty; pass a comma-separated list")
    return names


def _screen(items: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    out = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise MechscopeError(f"--screen {item!r} is not NAME=PATH (e.g. clean=clean.jsonl)")
        out.append((name, path))
    return tuple(out)


def _bits(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(p) for p in _names(text, "--compress-bits"))
    except ValueError:
        raise MechscopeError(f"--compress-bits {text!r} is not a list like 4.5,3.5") from None


def _command(ctx: click.Context) -> tuple[str, ...]:
    """The command line as given: the options read from it, in their order of declaration."""
    from click.core import ParameterSource

    out = ["mechscope", "audit"]
    for param in ctx.command.params:
        if ctx.get_parameter_source(param.name) != ParameterSource.COMMANDLINE:
            continue
        value, flag = (
            ctx.params[param.name],
            param.opts[-1] if param.opts[-1].startswith("--") else param.opts[0],
        )
        if isinstance(param, click.Option) and param.is_flag:
            out.append(flag)
        else:
            out += [
                x for v in (value if isinstance(value, tuple) else (value,)) for x in (flag, str(v))
            ]
    return tuple(out)


@click.command()
@click.option(
    "--model", "-m", default=DEFAULT_MODEL, show_default=True, help="Hub id, folder or .gguf."
)
@click.option("--out", "-o", type=click.Path(file_okay=False), default="mechscope-audit",
              show_default=True, help="Folder for audit.html, audit.pdf, audit.json and artefacts.")  # fmt: skip
@click.option("--tasks", default="ioi", show_default=True,
              help="Comma-separated built-in task names or .jsonl task files.")  # fmt: skip
@click.option("--prompts", "task_prompts", default=8, show_default=True, help="Prompts per task.")
@click.option(
    "--features", type=str, default=None, help="A feature database (file or postgresql:// URL)."
)
@click.option(
    "--detector", type=str, default=None, help="An anomaly detector folder (mechscope anomaly fit)."
)
@click.option("--screen", multiple=True, help="NAME=PATH: inputs the detector screens (repeatable; "
              "a set named 'clean' is the reference for AUROC).")  # fmt: skip
@click.option("--fpr", default=0.01, show_default=True, help="Detector false-positive rate.")
@click.option("--compress", is_flag=True, help="Measure the tasks after quantization.")
@click.option("--compress-bits", default=DEFAULT_BITS, show_default=True,
              help="Effective bit budgets of --compress.")  # fmt: skip
@click.option("--findings", default="circuits,heads,lens,probes,sae,features", show_default=True,
              help="Analyses of the findings section.")  # fmt: skip
@click.option("--sae", "sae_dir", type=click.Path(exists=True), default=None,
              help="An SAE folder for the SAE finding (default: the report's cached one).")  # fmt: skip
@click.option("--intended-use", default="", help="Your statement of the model's intended use.")
@click.option("--seed", default=0, show_default=True)
@click.option("--no-pdf", is_flag=True, help="Write the HTML only.")
@quiet_option
def audit(model: str, out: str, tasks: str, task_prompts: int, features: str | None,
          detector: str | None, screen: tuple[str, ...], fpr: float, compress: bool,
          compress_bits: str, findings: str, sae_dir: str | None, intended_use: str, seed: int,
          no_pdf: bool, quiet: bool) -> None:  # fmt: skip
    """Audit a model: ten sections in one self-contained HTML file and a PDF; print its path."""
    from mechscope.audit import AuditConfig, build_audit
    from mechscope.audit.build import check_pdf
    from mechscope.files import folder_lock

    config = AuditConfig(  # checked before the slow load
        tasks=_names(tasks, "--tasks"), task_prompts=task_prompts, features=features,
        detector=detector, screen=_screen(screen), fpr=fpr,
        compress_bits=_bits(compress_bits) if compress else (),
        findings=_names(findings, "--findings"), sae=sae_dir, intended_use=intended_use,
        seed=seed, command=_command(click.get_current_context()),
    )  # fmt: skip
    if not no_pdf:
        check_pdf()
    with folder_lock(out, "mechscope audit"):
        files = build_audit(
            load_model(model, quiet=quiet), out, config, pdf=not no_pdf, quiet=quiet
        )
    click.echo(str(files.html))
