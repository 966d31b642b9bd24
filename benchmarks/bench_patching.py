"""Exact and attribution patching on SmolLM2 IOI: mechscope against TransformerLens, same run.

For an IOI batch (``load_task("ioi", n=8)``, ABC corruption, logit difference), it times:

- mechscope ``patch(..., "resid_pre")`` and ``patch(..., "attn_head")`` (exact, batched engine)
  against TransformerLens 4.3's ``get_act_patch_resid_pre`` and
  ``get_act_patch_attn_head_out_all_pos`` on a ``TransformerBridge`` (one forward per patch);
  both compute attention eagerly here (mechscope ``attn="eager"``), and the values must agree
  within 1e-3;
- mechscope ``attribution_patch(..., "attn_head")`` (on mechscope's default model: SDPA
  attention) against the same exact TransformerLens head sweep (goal >= 100x), with its Spearman
  correlation to the exact values (goal >= 0.8).

Goals: exact sweeps >= 10x faster than TransformerLens. Process CPU time is reported beside wall
time (on a shared machine, CPU time with ``--threads 1`` is the steady figure). Both libraries run
on ``--device`` (auto: cuda when available); on a GPU every timing is synchronised and wall time is
the figure.

    python benchmarks/bench_patching.py --threads 1 [--device cpu|cuda|auto]
"""

from __future__ import annotations

import argparse
import copy
from typing import Any

import torch
from scipy.stats import spearmanr

import mechscope
from machine import add_device_option, device_label, pick_device, timed
from mechscope.attribution import attribution_patch
from mechscope.models.loading import load_hf
from mechscope.patching import patch
from mechscope.tasks import load_task
from mechscope.tasks.metrics import logit_diff

HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(spearmanr(a.flatten().numpy(), b.flatten().numpy())[0])


def causal_bound(dims: Any, clean: torch.Tensor, corrupt: torch.Tensor, sweep: str) -> float:
    """Forward passes' worth of multiply-adds that any exact engine needs for the sweep.

    An exact engine may skip what causality and equality allow: layers before the patched one,
    positions before the first one the patch changes (a patch whose slice is the same in both
    runs changes nothing) and the unembedding of every position but the last. It cannot skip
    the rest. Counted in multiply-adds of the linear maps (attention and softmax of 14
    positions are negligible), relative to one full forward of the batch.
    """
    n, pos = dims.n_layers, clean.shape[1]
    d, kv = dims.d_model, dims.n_kv_heads * dims.d_head
    mlp = (3 if dims.gated_mlp else 2) * d * dims.d_mlp
    layer = 2 * d * d + 2 * d * kv + mlp  # per token
    unembed = d * dims.d_vocab
    forward = pos * (n * layer + unembed)
    differs = (clean != corrupt).any(0)
    first = int(differs.nonzero()[0, 0])  # no position before it changes in any layer
    work = 0.0
    for start in range(n):
        if sweep == "resid_pre":
            for p in range(pos):
                same = p < first or (start == 0 and not bool(differs[p]))
                work += 0 if same else (pos - p) * (n - start) * layer + unembed
        else:  # a head's output at every position, from the first that differs
            heads = dims.n_heads
            work += heads * ((pos - first) * (n - start) * layer + unembed)
    return work / forward


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=8, help="IOI prompts")
    p.add_argument("--threads", type=int, default=None)
    add_device_option(p)
    args = p.parse_args(argv)
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    from transformer_lens import patching as tl_patching
    from transformer_lens.model_bridge import TransformerBridge

    hf, tokenizer, _ = load_hf("smollm2-135m", device=device, progress=False)
    bridge = TransformerBridge.boot_transformers(
        HUB_ID, hf_model=copy.deepcopy(hf), tokenizer=tokenizer, device=device
    )
    model = mechscope.HookedModel(hf, tokenizer, attn="eager")
    # attribution is an estimate, not held to TransformerLens's attention implementation: it runs
    # on mechscope's default model (SDPA attention, eager only where a pattern is hooked)
    default = mechscope.HookedModel(copy.deepcopy(hf), tokenizer)
    batch = load_task("ioi", model, n=args.n).tokenize(model, require_uniform=True).to(device)
    clean, corrupt = batch.clean_tokens, batch.corrupt_tokens

    def tl_metric(logits: torch.Tensor) -> torch.Tensor:
        return logit_diff(logits, batch).mean()

    with torch.no_grad():
        _, clean_cache = bridge.run_with_cache(clean)
    rows = []
    for sweep, tl_name in (
        ("resid_pre", "get_act_patch_resid_pre"),
        ("attn_head", "get_act_patch_attn_head_out_all_pos"),
    ):
        ours, w1, c1 = timed(lambda s=sweep: patch(model, batch, logit_diff, s), device)
        with torch.no_grad():
            tl_fn = getattr(tl_patching, tl_name)
            theirs, w2, c2 = timed(
                lambda f=tl_fn: f(bridge, corrupt, clean_cache, tl_metric), device
            )
        diff = float((ours.values.cpu() - theirs.cpu()).abs().max())
        need = causal_bound(model.dims, clean, corrupt, sweep)
        tl_forwards = ours.values.numel()
        check = f"max abs diff {diff:.1e}; work ratio {tl_forwards / need:.1f}x"
        rows.append((f"exact {sweep}", w1, c1, w2, c2, check))
        if sweep == "attn_head":
            exact_heads, tl_wall, tl_cpu = ours.values, w2, c2
    with torch.enable_grad():
        # one untimed call first (TransformerLens's sweep amortises its warm-up over 270
        # forwards), then the median of three
        def attribute() -> Any:
            return attribution_patch(default, batch, logit_diff, "attn_head")

        attribute()
        runs = sorted((timed(attribute, device) for _ in range(3)), key=lambda r: r[2])
        attr, w3, c3 = runs[1]
    rho = spearman(attr.values.cpu(), exact_heads.cpu())
    rows.append(("attribution attn_head", w3, c3, tl_wall, tl_cpu, f"Spearman {rho:.3f}"))
    print(f"SmolLM2-135M-Instruct, IOI n={len(batch)}, {clean.shape[1]} tokens, "
          f"torch threads {torch.get_num_threads()}, device {device_label(device)}")  # fmt: skip
    print("| method | mechscope wall s | mechscope CPU s | TL wall s | TL CPU s | "
          "speed-up wall | speed-up CPU | check |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for name, w1, c1, w2, c2, check in rows:
        print(f"| {name} | {w1:.2f} | {c1:.2f} | {w2:.2f} | {c2:.2f} | "
              f"{w2 / w1:.1f}x | {c2 / c1:.1f}x | {check} |")  # fmt: skip


if __name__ == "__main__":
    main()
