"""Round trip of SAE files between mechscope and SAELens, each side in its own environment.

    python benchmarks/peers/saelens_interop.py write DIR                 # mechscope writes
    /work/peers/venv-saelens/bin/python benchmarks/peers/saelens_interop.py check DIR
    /work/peers/venv-saelens/bin/python benchmarks/peers/saelens_interop.py write-saelens DIR
    python benchmarks/peers/saelens_interop.py check-saelens DIR         # mechscope reads

Each writer stores, next to every SAE folder, random inputs with the writer's latents and
reconstructions (``<name>.pt``, plain tensors); each checker loads the other side's folder and
prints the largest differences. Set up the SAELens venv with benchmarks/peers/setup_saelens.sh.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

ARCHS = ("relu", "topk", "jumprelu", "batchtopk")
SAELENS = ("standard", "topk", "jumprelu")


def write(root: Path) -> None:
    from mechscope.sae import SAE, SAEConfig, save_sae

    for arch in ARCHS:
        kw = {"k": 8} if arch in ("topk", "batchtopk") else {}
        cfg = SAEConfig(arch=arch, d_in=32, d_sae=128, hook_name="blocks.3.hook_resid_post",
                        normalize_scale=2.0, **kw)  # fmt: skip
        sae = SAE(cfg)
        with torch.no_grad():
            sae.b_enc.normal_(0, 0.1)
            sae.b_dec.normal_(0, 0.1)
        save_sae(sae.eval(), root / arch)
        x = torch.randn(50, 32)
        with torch.no_grad():
            torch.save({"x": x, "lat": sae.encode(x), "xhat": sae(x).x_hat}, root / f"{arch}.pt")


def write_saelens(root: Path) -> None:
    import sae_lens as sl

    torch.manual_seed(0)
    kinds = {
        "standard": (sl.StandardSAE, sl.StandardSAEConfig(d_in=32, d_sae=128)),
        "topk": (sl.TopKSAE, sl.TopKSAEConfig(d_in=32, d_sae=128, k=8)),
        "jumprelu": (sl.JumpReLUSAE, sl.JumpReLUSAEConfig(d_in=32, d_sae=128)),
    }
    for name, (cls, cfg) in kinds.items():
        sae = cls(cfg)
        with torch.no_grad():
            for pname, p in sae.named_parameters():
                p.normal_(0, 0.3)
                if "threshold" in pname:
                    p.abs_()
        sae.save_model(str(root / f"sl-{name}"))
        x = torch.randn(50, 32)
        with torch.no_grad():
            lat = sae.encode(x)
            torch.save({"x": x, "lat": lat, "xhat": sae.decode(lat)}, root / f"sl-{name}.pt")


def _compare(name: str, encode, decode, path: Path) -> None:
    ref = torch.load(path, weights_only=True)
    with torch.no_grad():
        lat = encode(ref["x"])
        xhat = decode(lat)
    print(f"{name:10s} latents max diff {float((lat - ref['lat']).abs().max()):.3g}  "
          f"x_hat max diff {float((xhat - ref['xhat']).abs().max()):.3g}")  # fmt: skip


def check(root: Path) -> None:  # runs in the SAELens venv
    from sae_lens import SAE

    for arch in ARCHS:
        sae = SAE.load_from_disk(str(root / arch))
        _compare(f"{arch}->{type(sae).__name__}", sae.encode, sae.decode, root / f"{arch}.pt")


def check_saelens(root: Path) -> None:  # runs with mechscope
    from mechscope.sae import load_sae

    for name in SAELENS:
        sae = load_sae(root / f"sl-{name}")
        _compare(f"{name}->{sae.cfg.arch}", sae.encode, sae.decode, root / f"sl-{name}.pt")


if __name__ == "__main__":
    command, folder = sys.argv[1], Path(sys.argv[2])
    folder.mkdir(parents=True, exist_ok=True)
    {"write": write, "check": check, "write-saelens": write_saelens,
     "check-saelens": check_saelens}[command](folder)  # fmt: skip
