"""DAS: the known variable of a trained toy, and pyvene as the peer on the same interventions.

    python benchmarks/bench_das.py [--pyvene /work/peers/venv-pyvene/bin/python] [--skip-smollm2]

1. Ground truth (hierarchical equality toy, :mod:`mechscope.causal.toy`): held-out IIA of V1 with
   bootstrap intervals at the site that must hold it (``blocks.1.hook_resid_pre``, position 1),
   at sites that cannot (position 0; the embeddings), for a random subspace of the same size, and
   boundless DAS's learned size; the same for V2 at position 3.
2. pyvene parity (when ``--pyvene`` points at the peer venv's python; see
   benchmarks/peers/setup_pyvene.sh), on the toy and on SmolLM2-135M (IOI-swap, the residual
   stream entering ``--smol-layer`` (default 24, where the IOI name has reached the last position
   and DAS reaches IIA ~0.9) at the last position, k = ``--smol-k``): the largest logit
   difference of one fixed-basis interchange intervention (default the difference-PCA basis,
   which changes most answers), the held-out IIA after DAS from the same starting subspace on the
   same minibatches, and CPU milliseconds per training step with the ratio. (Until 2026-12-06 the
   SmolLM2 comparison ran at layer 14 with k = 1, where both tools score IIA 0:
   ``--smol-layer 14 --smol-k 1 --smol-lr 0.01 --smol-steps 40 --smol-n 128 --smol-fixed random``.)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import add_device_option, device_label, machine, pick_device  # noqa: E402
from mechscope.causal import (  # noqa: E402
    DASConfig,
    iia,
    interchange,
    random_basis,
    toy,  # noqa: E402
    train_das,
)
from mechscope.causal.das import difference_basis  # noqa: E402
from mechscope.stats import bootstrap_ci  # noqa: E402


def fmt(correct: torch.Tensor) -> str:
    lo, hi = bootstrap_ci(correct.float())
    return f"{float(correct.float().mean()):.3f} [{lo:.3f}, {hi:.3f}]"


def ground_truth() -> None:
    model = toy.equality_model(quiet=False)
    print(f"toy accuracy on 1000 fresh inputs: {toy.accuracy(model):.3f}")
    cfg = DASConfig(k=1, steps=150)
    for var, right in (("V1", 1), ("V2", 3)):
        train, test = toy.equality_pairs((var,), 1024, seed=0).split(0.25)
        chance = float((test.label == test.base_label).float().mean())
        print(f"{var}: {len(test)} held-out pairs; unintervened model scores {chance:.3f}")
        for site, pos in (
            ("blocks.1.hook_resid_pre", right),
            ("blocks.1.hook_resid_pre", 0),
            ("blocks.0.hook_resid_pre", right),
            ("blocks.1.hook_resid_post", 4),
        ):
            r = train_das(model, train, test, site, [pos], cfg)
            print(f"  DAS k=1 {site} pos {pos}: IIA {fmt(r.test_correct)}")
        rand = iia(model, test, "blocks.1.hook_resid_pre", [right], random_basis(32, 1, seed=0))
        print(f"  random 1-d subspace at the right site: IIA {fmt(rand)}")
        b = train_das(model, train, test, "blocks.1.hook_resid_pre", [right],
                      DASConfig(k=8, steps=150, boundless=True))  # fmt: skip
        print(f"  boundless DAS from k=8: learned k={b.k}, IIA {fmt(b.test_correct)}")
        rand = iia(model, test, "blocks.1.hook_resid_pre", [right], random_basis(32, b.k, seed=0))
        print(f"  random {b.k}-d subspace at the right site: IIA {fmt(rand)}")


def parity(
    python: str,
    name: str,
    model,
    train,
    test,
    layer: int,
    pos: int,
    steps: int,
    bs: int = 32,
    *,
    k: int = 1,
    lr: float = 1e-2,
    fixed_basis: str = "random",
) -> None:
    """One comparison against pyvene (see the module docstring)."""
    seed = 0
    d = model.dims.d_model
    site = f"blocks.{layer}.hook_resid_pre"
    if fixed_basis == "pca":  # an intervention that changes the answer, not only the logits
        basis = difference_basis(model, train, site, [pos], k)
    else:
        basis = random_basis(d, k, seed=1)
    init = random_basis(d, k, seed=2)
    fixed_b, fixed_s = test.base[:8], test.source[:8]
    with torch.no_grad():
        ours_fixed = interchange(model, fixed_b, fixed_s, site, [pos], basis)
    config = DASConfig(k=k, steps=steps, batch_size=bs, lr=lr, seed=seed)
    cpu = time.process_time()
    ours = train_das(model, train, test, site, [pos], config, init=init)
    ours_total = time.process_time() - cpu
    spec = {
        "model": model.provenance.get("folder", "smollm2-135m"),
        "layer": layer, "position": pos, "k": k, "basis": basis, "init": init,
        "base": fixed_b, "source": fixed_s, "lr": lr, "seed": seed, "steps": steps,
        "batch_size": bs, "train_base": train.base, "train_source": train.source,
        "train_label": train.label, "test_base": test.base, "test_source": test.source,
        "test_label": test.label,
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(spec, f"{tmp}/spec.pt")
        script = Path(__file__).resolve().parent / "peers" / "run_pyvene_das.py"
        subprocess.run([python, str(script), f"{tmp}/spec.pt", f"{tmp}/out.pt"], check=True)
        peer = torch.load(f"{tmp}/out.pt", weights_only=True)
    diff = float((peer["fixed_logits"] - ours_fixed).abs().max())
    last = ours_fixed[:, pos]
    same_top = float((peer["fixed_logits"][:, pos].argmax(-1) == last.argmax(-1)).float().mean())
    flips = float((last.argmax(-1) == test.label[:8]).float().mean())
    ours_ms = ours.fit_seconds / steps * 1000
    peer_ms = float(peer["step_seconds"].mean()) * 1000
    ours_cpu = ours.fit_cpu_seconds / steps * 1000
    peer_cpu = float(peer["step_cpu"].mean()) * 1000
    print(f"{name}: {site} position {pos}, k={k}, lr {lr}, {steps} steps of {bs}, "
          f"{len(train)} training / {len(test)} held-out pairs")  # fmt: skip
    print(f"  fixed {fixed_basis} basis, 8 pairs: max |logit difference| vs pyvene {diff:.2e}; "
          f"same argmax {same_top:.3f}; argmax = counterfactual label {flips:.3f}")  # fmt: skip
    print(f"  DAS: held-out IIA mechscope {fmt(ours.test_correct)} (train {ours.train_iia:.3f}), "
          f"pyvene {fmt(peer['test_correct'])}; same held-out predictions "
          f"{float((ours.test_correct == peer['test_correct']).float().mean()):.3f}")  # fmt: skip
    print(f"  ms per step (wall): mechscope {ours_ms:.1f}, pyvene {peer_ms:.1f}, "
          f"ratio {peer_ms / ours_ms:.2f}x")  # fmt: skip
    print(f"  ms per step (CPU): mechscope {ours_cpu:.1f}, pyvene {peer_cpu:.1f}, "
          f"ratio {peer_cpu / ours_cpu:.2f}x")  # fmt: skip
    if "total_cpu" in peer:
        peer_total = float(peer["total_cpu"])
        print(f"  whole run CPU-s (steps + caching + held-out IIA): mechscope {ours_total:.1f} "
              f"(of which steps {ours.fit_cpu_seconds:.1f}), pyvene {peer_total:.1f}, ratio "
              f"{peer_total / ours_total:.2f}x")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pyvene", help="the peer venv's python (benchmarks/peers/)")
    parser.add_argument("--skip-smollm2", action="store_true")
    parser.add_argument("--skip-truth", action="store_true")
    parser.add_argument("--skip-toy", action="store_true", help="no toy parity run")
    parser.add_argument("--smol-layer", type=int, default=24, help="residual entering this layer")
    parser.add_argument("--smol-k", type=int, default=64)
    parser.add_argument("--smol-lr", type=float, default=2e-2)
    parser.add_argument("--smol-steps", type=int, default=100)
    parser.add_argument("--smol-batch", type=int, default=32)
    parser.add_argument(
        "--smol-n", type=int, default=256, help="IOI-swap pairs (a quarter held out)"
    )
    parser.add_argument("--smol-fixed", choices=["pca", "random"], default="pca",
                        help="the fixed basis compared: difference PCA (changes answers) or random")  # fmt: skip
    add_device_option(parser)
    args = parser.parse_args()
    device = pick_device(args.device)
    if device.type != "cpu":  # the DAS and MIB code keep their index tensors on the CPU
        raise SystemExit("error: this benchmark runs on the CPU only for now; use --device cpu")
    torch.set_num_threads(1)
    print(f"device {device_label(device)}", machine(device))
    if not args.skip_truth:
        ground_truth()
    if not args.pyvene:
        return
    model = toy.equality_model()
    model.provenance["folder"] = str(toy.cache_folder())
    train, test = toy.equality_pairs(("V1",), 1024, seed=0).split(0.25)
    if not args.skip_toy:
        parity(args.pyvene, "toy (equality, V1)", model, train, test, 1, 1, 150)
    if args.skip_smollm2:
        return
    import mechscope
    from mechscope.causal import from_task
    from mechscope.tasks import load_task

    smol = mechscope.load("smollm2-135m", progress=False)
    pairs = from_task(load_task("ioi-swap", smol, n=args.smol_n, seed=0), smol)
    train, test = pairs.split(0.25)
    if pairs.mask is not None:
        raise SystemExit("error: the parity run needs IOI-swap prompts of one length")
    last = pairs.base.shape[1] - 1
    parity(args.pyvene, "SmolLM2-135M (IOI-swap)", smol, train, test, args.smol_layer, last,
           args.smol_steps, args.smol_batch, k=args.smol_k, lr=args.smol_lr,
           fixed_basis=args.smol_fixed)  # fmt: skip


if __name__ == "__main__":
    main()
