"""The tuned lens: one learned affine translator per layer in front of the logit lens.

Belrose et al., "Eliciting Latent Predictions from Transformers with the Tuned Lens" (2023).
Layer ``l``'s residual ``h`` is read as ``unembed(final_norm(h + A_l h + b_l))``, through the
model's own final norm and unembedding. ``A_l`` and ``b_l`` start at zero, so an untrained tuned
lens *is* the logit lens (exactly: ``h + 0 h + 0 == h``); :mod:`mechscope.lenses.tuned_train`
trains them to minimise KL(final distribution || lens distribution) on a corpus.

A :class:`TunedLens` holds the translators of every layer of one model and one site. It is saved
as one safetensors file (``weight [layer d_model d_model]``, ``bias [layer d_model]``) whose header
carries a JSON config (model name and fingerprint, layer count, d_model, site, tokens trained,
corpus, training settings), written atomically (:func:`mechscope.files.atomic_path`).
:meth:`TunedLens.load` checks the config against the model it is loaded for.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

from mechscope.errors import MechscopeError
from mechscope.files import atomic_path
from mechscope.lenses.logit_lens import LogitLensResult, check_site, read_lens
from mechscope.models.fingerprint import model_fingerprint
from mechscope.models.hooked import HookedModel

__all__ = ["FORMAT", "TunedLens", "model_fingerprint", "tuned_lens"]

FORMAT = "mechscope.tuned_lens/1"  # the "format" key of the saved config


def _model_name(model: HookedModel) -> str:
    return str(model.provenance.get("name") or getattr(model.hf.config, "_name_or_path", "") or "")


class TunedLens(nn.Module):
    """Affine translators ``h -> h + A_l h + b_l`` for every layer of one model at one site.

    ``weight [layer d_model d_model]`` holds ``A_l`` and ``bias [layer d_model]`` holds ``b_l``;
    both start at zero (the logit lens). ``config`` records what the lens was made for and how it
    was trained (see the module docstring).
    """

    def __init__(self, n_layers: int, d_model: int, config: dict[str, Any]) -> None:
        super().__init__()
        # one parameter per layer, so that an optimizer can give each layer its own step size
        self.weights = nn.ParameterList(
            nn.Parameter(torch.zeros(d_model, d_model)) for _ in range(n_layers)
        )
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(d_model)) for _ in range(n_layers))
        self.config = dict(config)

    @property
    def weight(self) -> Tensor:
        """``[layer d_model d_model]``: every ``A_l``."""
        return torch.stack(list(self.weights))

    @property
    def bias(self) -> Tensor:
        """``[layer d_model]``: every ``b_l``."""
        return torch.stack(list(self.biases))

    @property
    def n_layers(self) -> int:
        return len(self.weights)

    @property
    def d_model(self) -> int:
        return self.biases[0].shape[0]

    def set_(self, weight: Tensor, bias: Tensor) -> TunedLens:
        """Copy ``weight [layer d d]`` and ``bias [layer d]`` into the translators."""
        with torch.no_grad():
            for i in range(self.n_layers):
                self.weights[i].copy_(weight[i])
                self.biases[i].copy_(bias[i])
        return self

    @classmethod
    def identity(cls, model: HookedModel, site: str = "resid_post") -> TunedLens:
        """An untrained lens for ``model`` (equal to the logit lens)."""
        check_site(model, site)
        dims = model.dims
        config = {
            "format": FORMAT,
            "model": _model_name(model),
            "fingerprint": model_fingerprint(model),
            "n_layers": dims.n_layers,
            "d_model": dims.d_model,
            "site": site,
            "tokens_trained": 0,
            "corpus": None,
        }
        return cls(dims.n_layers, dims.d_model, config)

    @property
    def site(self) -> str:
        return str(self.config["site"])

    def trained_layers(self) -> list[int]:
        """Layers with a translator to train: at ``resid_post`` the last one is the output."""
        n = self.n_layers
        return list(range(n - 1 if self.site == "resid_post" else n))

    def translate(self, resid: Tensor, layers: Tensor | Sequence[int]) -> Tensor:
        """``resid [n pos d_model]`` of ``layers [n]`` -> translated residuals, same shape."""
        index = [int(i) for i in layers]
        weight = torch.stack([self.weights[i] for i in index]).to(resid.dtype)  # [n d_out d_in]
        bias = torch.stack([self.biases[i] for i in index]).to(resid.dtype)  # [n d_out]
        return resid + torch.einsum("npi,noi->npo", resid, weight) + bias[:, None]

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the lens to ``path`` (a .safetensors file) atomically; return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {
            "weight": self.weight.detach().cpu().contiguous(),
            "bias": self.bias.detach().cpu().contiguous(),
        }
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"config": json.dumps(self.config)})
        return path

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], model: HookedModel, *, check_weights: bool = True
    ) -> TunedLens:
        """Read a lens saved by :meth:`save` for ``model``.

        Raises :class:`MechscopeError` when the file is missing or not a tuned lens, or when it
        was made for other dimensions or (with ``check_weights``) other weights.
        """
        tensors, config = read_file(path)
        _check_fits(config, tensors, model, Path(path), check_weights)
        lens = cls(model.dims.n_layers, model.dims.d_model, config)
        return lens.set_(tensors["weight"], tensors["bias"])


def read_file(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """The tensors and the JSON config of a saved tuned lens (nothing is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise MechscopeError(f"no tuned lens at {path}; train one with `mechscope lens train`")
    try:
        with safe_open(str(path), framework="pt") as f:
            config = json.loads((f.metadata() or {}).get("config", "null"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise MechscopeError(
            f"{path} is not a safetensors file ({exc}); pass a tuned lens"
        ) from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise MechscopeError(f"{path} is not a mechscope tuned lens (no {FORMAT} config)")
    if set(tensors) != {"weight", "bias"}:
        raise MechscopeError(f"{path} should hold 'weight' and 'bias', holds {sorted(tensors)}")
    return tensors, config


def _check_fits(
    config: dict[str, Any],
    tensors: dict[str, Tensor],
    model: HookedModel,
    path: Path,
    check_weights: bool,
) -> None:
    dims = model.dims
    want = (dims.n_layers, dims.d_model)
    have = (config.get("n_layers"), config.get("d_model"))
    shapes = (tuple(tensors["weight"].shape), tuple(tensors["bias"].shape))
    if have != want or shapes != ((*want, dims.d_model), want):
        raise MechscopeError(
            f"{path} is a tuned lens for {have[0]} layers x d_model {have[1]} "
            f"(tensors {shapes[0]}, {shapes[1]}); this model has {want[0]} x {want[1]}: "
            "train a lens for this model with `mechscope lens train`"
        )
    check_site(model, str(config.get("site")))
    if check_weights and config.get("fingerprint") != model_fingerprint(model):
        raise MechscopeError(
            f"{path} was trained on other weights ({config.get('model')!r}, fingerprint "
            f"{config.get('fingerprint')}); train a lens for this model with `mechscope lens "
            "train`, or pass check_weights=False to use it anyway"
        )


def tuned_lens(
    model: HookedModel,
    tokens: Tensor | str,
    *,
    lens: TunedLens,
    target: int | None = None,
    top_k: int = 5,
    positions: Sequence[int] | None = None,
) -> LogitLensResult:
    """The logit lens read through ``lens``'s translators (at the site the lens was trained on)."""
    if (lens.n_layers, lens.d_model) != (model.dims.n_layers, model.dims.d_model):
        raise MechscopeError(
            f"the tuned lens has {lens.n_layers} x {lens.d_model} translators; this model needs "
            f"{model.dims.n_layers} x {model.dims.d_model}"
        )
    with torch.no_grad():
        return read_lens(
            model,
            tokens,
            target=target,
            top_k=top_k,
            site=lens.site,
            positions=positions,
            translate=lens.translate,
            lens="tuned",
        )
