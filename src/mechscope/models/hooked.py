"""The model wrapper: an untouched Hugging Face causal LM with named sites.

It finds sites and runs forwards; analyses are free functions elsewhere. With no hooks attached,
its logits are the bare HF model's (the attention function hands off to SDPA unchanged).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from mechscope.cache import Cache
from mechscope.errors import MechscopeError
from mechscope.families import Dims, Family, family_for
from mechscope.models.inputs import LayerInputs, capture_inputs
from mechscope.sites import (
    Calls,
    HookFn,
    Model,
    Site,
    SiteSelector,
    attach,
    detach,
    final_logits,
    select_sites,
    site_table,
)
from mechscope.sites import attention as attention_fn

Tensor = torch.Tensor
HookSpec = Iterable[tuple[str | Callable[[str], bool], HookFn]]


class _Stopped(Exception):
    """Raised by the ``stop_after`` hook; :meth:`HookedModel.hooks` swallows it."""


def _stopper(names: list[str]) -> list[tuple[str, HookFn]]:
    """Hooks that raise :class:`_Stopped` once every site in ``names`` has run."""
    pending = set(names)

    def done(t: Tensor, hook: Any) -> None:
        pending.discard(hook.name)
        if not pending:
            raise _Stopped

    return [(name, done) for name in names]


class HookedModel:
    """A HF causal LM plus its family, dims and site table.

    ``attn="eager"`` computes every attention layer eagerly (as TransformerLens does); the default
    ``"sdpa"`` is eager only in layers whose scores or pattern are hooked.
    """

    def __init__(
        self,
        hf: nn.Module,
        tokenizer: Any = None,
        *,
        attn: str = "sdpa",
        provenance: dict[str, Any] | None = None,
    ) -> None:
        if attn not in ("sdpa", "eager"):
            raise MechscopeError(f"attn must be 'sdpa' or 'eager', not {attn!r}")
        self.hf = hf.eval()
        self.tokenizer = tokenizer
        self.family: Family = family_for(hf.config, hf)
        self.dims: Dims = self.family.dims(hf.config)
        self.sites: dict[str, Site] = site_table(self.family, self.dims)
        self.provenance = provenance or {}
        self._m = Model(hf, self.family, self.dims)
        self._check_modules()
        if self.family.residual_only:  # the generic fallback leaves attention as it is
            return
        attention_fn.register()
        hf.set_attn_implementation(attention_fn.NAME)
        for layer in range(self.dims.n_layers):
            setattr(
                self._m.module(self.family.attn, layer), attention_fn.EAGER_ATTR, attn == "eager"
            )

    def _check_modules(self) -> None:
        f = self.family
        paths = [f.embed, f.layers, f.final_norm, f.unembed, f.pos_embed]
        layer = [f.ln1, f.ln2, f.attn, f.q, f.k, f.v, f.o, f.mlp, f.mlp_in, f.mlp_up, f.mlp_out]
        layer += [f.attn_write, f.mlp_write]
        paths += [f"{f.layers}.0.{p}" for p in layer if p]
        if f.moe:
            paths += [f"{f.layers}.0.{f.moe.router}", f"{f.layers}.0.{f.moe.experts}"]
        for path in filter(None, paths):
            try:
                self.hf.get_submodule(path)
            except AttributeError:
                raise MechscopeError(
                    f"model of type {self.hf.config.model_type!r} has no module {path!r}; "
                    "this variant of the family is not supported"
                ) from None

    def __repr__(self) -> str:
        d = self.dims
        return (
            f"HookedModel({self.family.name}: {d.n_layers} layers, d_model={d.d_model}, "
            f"{d.n_heads} heads ({d.n_kv_heads} kv), d_mlp={d.d_mlp}, vocab={d.d_vocab})"
        )

    # -- modules ---------------------------------------------------------------------------

    def block(self, layer: int) -> nn.Module:
        """The HF decoder layer ``layer`` (TransformerLens's ``blocks[layer]``)."""
        if not 0 <= layer < self.dims.n_layers:
            raise MechscopeError(f"layer must lie in [0, {self.dims.n_layers}), got {layer}")
        return self._m.module(self.family.layers).get_submodule(str(layer))

    def attn(self, layer: int) -> nn.Module:
        """The attention module of layer ``layer``."""
        return self.block(layer).get_submodule(self._path("attn"))

    def mlp(self, layer: int) -> nn.Module:
        """The MLP (or mixture-of-experts) module of layer ``layer``."""
        return self.block(layer).get_submodule(self._path("mlp"))

    def _path(self, part: str) -> str:
        path = getattr(self.family, part)
        if path is None:  # the generic fallback knows only the layers
            raise MechscopeError(
                f"{self.family.name} models have no known {part} module path (generic fallback); "
                "use model.block(L) and the HF module tree"
            )
        return path

    @property
    def embed(self) -> nn.Module:
        """The input token embedding (TransformerLens's ``embed``): ids -> ``[... d_model]``."""
        return self._m.module(self.family.embed)

    @property
    def final_norm(self) -> nn.Module:
        """The norm before the unembedding (TransformerLens's ``ln_final``)."""
        return self._m.module(self.family.final_norm)

    @property
    def unembed(self) -> nn.Module:
        """The unembedding (``lm_head``): ``[... d_model] -> [... d_vocab]``."""
        return self._m.module(self.family.unembed)

    # -- tokens ---------------------------------------------------------------------------

    def to_tokens(self, text: str | list[str], prepend_bos: bool = False) -> Tensor:
        """Token ids [batch pos]; a list of prompts is right-padded (see :meth:`tokenize`)."""
        return self.tokenize(text, prepend_bos=prepend_bos)[0]

    def tokenize(self, text: str | list[str], prepend_bos: bool = False) -> tuple[Tensor, Tensor]:
        """(tokens, attention_mask), both [batch pos], right-padded."""
        if self.tokenizer is None:
            raise MechscopeError("this model has no tokenizer; pass token ids instead of text")
        texts = [text] if isinstance(text, str) else list(text)
        if not texts or any(not t for t in texts):
            raise MechscopeError("empty prompt; pass some text")
        ids = [self.tokenizer(t)["input_ids"] for t in texts]
        bos = self.tokenizer.bos_token_id
        if prepend_bos and bos is not None:
            ids = [i if i[:1] == [bos] else [bos, *i] for i in ids]
        n = max(len(i) for i in ids)
        pad = self.tokenizer.pad_token_id
        pad = pad if pad is not None else (self.tokenizer.eos_token_id or 0)
        tokens = torch.full((len(ids), n), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), n), dtype=torch.long)
        for row, i in enumerate(ids):
            tokens[row, : len(i)] = torch.tensor(i)
            mask[row, : len(i)] = 1
        self._check_tokens(tokens)
        return tokens, mask

    def to_str_tokens(self, tokens: Tensor | str) -> list[str]:
        if isinstance(tokens, str):
            tokens = self.to_tokens(tokens)[0]
        return [self.tokenizer.decode([int(t)]) for t in tokens.reshape(-1)]

    def _check_tokens(self, tokens: Tensor) -> None:
        if tokens.ndim != 2 or tokens.shape[1] == 0:
            raise MechscopeError(
                f"tokens must be [batch pos] with pos >= 1, got {tuple(tokens.shape)}"
            )
        if tokens.shape[1] > self.dims.n_ctx:
            raise MechscopeError(
                f"prompt is {tokens.shape[1]} tokens, longer than the model's context of "
                f"{self.dims.n_ctx}; shorten it"
            )
        if int(tokens.min()) < 0 or int(tokens.max()) >= self.dims.d_vocab:
            raise MechscopeError(f"token ids must lie in [0, {self.dims.d_vocab})")

    # -- forwards -------------------------------------------------------------------------

    def forward(
        self,
        tokens: Tensor,
        attention_mask: Tensor | None = None,
        read_pos: Tensor | None = None,
        stop_at_layer: int | None = None,
    ) -> Tensor:
        """Logits [batch pos d_vocab]; respects the ambient grad mode, like any nn.Module.

        ``read_pos`` ([batch] positions): unembed only those positions (HF ``logits_to_keep``);
        the logits of every other position are NaN. For metrics that read one position per
        prompt, it saves the unembedding of the rest (a fifth of a SmolLM2 forward).

        ``stop_at_layer`` (as in TransformerLens): run layers ``0 .. L-1`` only and return the
        residual stream entering layer ``L`` [batch pos d_model] instead of logits (``L`` in
        ``[-n_layers, n_layers]``; negative counts from the end; ``n_layers``: before the final
        norm).
        """
        if stop_at_layer is not None:
            return self._stopped_forward(tokens, attention_mask, stop_at_layer)
        if tokens.ndim == 1:
            tokens = tokens[None]
        self._check_tokens(tokens)
        device = self.hf.get_input_embeddings().weight.device  # the first device of a map
        device = torch.device("cpu") if device.type == "meta" else device  # offloaded to disk
        kwargs: dict[str, Any] = {"input_ids": tokens.to(device), "use_cache": False}
        if attention_mask is not None:
            mask = attention_mask.to(device)
            kwargs["attention_mask"] = mask
            kwargs["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)
        if read_pos is None:
            return self.hf(**kwargs).logits
        keep = torch.as_tensor(read_pos).long().unique().to(device)
        if keep.ndim != 1 or bool((keep < 0).any()) or bool((keep >= tokens.shape[1]).any()):
            raise MechscopeError(
                f"read_pos must be positions in [0, {tokens.shape[1]}), got {read_pos}; pass each "
                "prompt's last token index"
            )
        kept = self.hf(**kwargs, logits_to_keep=keep).logits  # [batch len(keep) d_vocab]
        logits = kept.new_full((*tokens.shape, kept.shape[-1]), float("nan"))
        logits[:, keep] = kept
        return logits

    __call__ = forward

    def _stopped_forward(self, tokens: Tensor, mask: Tensor | None, layer: int) -> Tensor:
        n = self.dims.n_layers
        if not -n <= layer <= n:
            raise MechscopeError(f"stop_at_layer must lie in [{-n}, {n}], got {layer}")
        layer = layer % n if layer < 0 else layer
        site = f"blocks.{layer}.hook_resid_pre" if layer < n else f"blocks.{n - 1}.hook_resid_post"
        kept: list[Tensor] = []
        with self.hooks([(site, lambda t, hook: kept.append(t))], stop_after=site):
            self.forward(tokens, mask)
        return kept[0]

    def _requests(self, fwd: HookSpec, bwd: HookSpec) -> dict[str, Calls]:
        requests: dict[str, Calls] = {}
        for direction, specs in (("fwd", fwd), ("bwd", bwd)):
            for selector, fn in specs:
                for name in select_sites(self.sites, selector):
                    calls = requests.setdefault(name, Calls(self.sites[name]))
                    getattr(calls, direction).append(fn)
        return requests

    @contextmanager
    def hooks(
        self, fwd: HookSpec = (), bwd: HookSpec = (), stop_after: SiteSelector = None
    ) -> Iterator[HookedModel]:
        """Attach forward/backward hook functions for the duration of a ``with`` block.

        Each spec is ``(name_or_glob_or_predicate, fn)``; ``fn(activation, hook)`` returns a
        replacement or None. Hooks are always removed on exit, also on error.

        ``stop_after`` (a site, glob or list): once every one of these sites has run (after its
        other hooks), the forward stops and the ``with`` block is left at once, without error;
        code after the forward call inside the block does not run.
        """
        fwd = list(fwd)
        if stop_after is not None:
            fwd += _stopper(select_sites(self.sites, stop_after))
        handles = attach(self._m, self._requests(fwd, bwd))
        try:
            yield self
        except _Stopped:
            pass
        finally:
            detach(handles)

    def run_with_hooks(
        self,
        tokens: Tensor,
        fwd_hooks: HookSpec = (),
        bwd_hooks: HookSpec = (),
        attention_mask: Tensor | None = None,
        stop_at_layer: int | None = None,
    ) -> Tensor:
        with self.hooks(fwd_hooks, bwd_hooks):
            return self.forward(tokens, attention_mask, stop_at_layer=stop_at_layer)

    def run_with_cache(
        self,
        tokens: Tensor,
        names: SiteSelector = None,
        attention_mask: Tensor | None = None,
        fwd_hooks: HookSpec = (),
        detach_cache: bool = True,
        read_pos: Tensor | None = None,
        stop_at_layer: int | None = None,
    ) -> tuple[Tensor, Cache]:
        """Logits and a :class:`Cache` of the selected sites only (None selects all).

        Interventions in ``fwd_hooks`` run before caching, so the cache shows their effect;
        ``read_pos`` and ``stop_at_layer`` as in :meth:`forward` (with ``stop_at_layer`` the
        first value is the residual entering that layer, and the cache holds only the
        selected sites that ran before it).
        """
        cache = Cache()

        def store(t: Tensor, hook: Any) -> None:
            cache[hook.name] = t.detach() if detach_cache else t

        names = select_sites(self.sites, names)
        with self.hooks([*fwd_hooks, *((n, store) for n in names)]):
            logits = self.forward(tokens, attention_mask, read_pos, stop_at_layer)
        return logits, cache

    @contextmanager
    def capture_inputs(self) -> Iterator[LayerInputs]:
        """Record what each decoder layer is called with during the forwards in the block."""
        with capture_inputs(self._m.module(self.family.layers)) as inputs:
            yield inputs

    def run_from(
        self,
        resid: Tensor,
        layer: int,
        inputs: LayerInputs,
        *,
        kv_cache: Any = None,
        logits: bool = True,
    ) -> Tensor:
        """Logits from the residual stream before ``layer`` (resid_pre), calling the HF layers.

        ``inputs`` comes from :meth:`capture_inputs` on a run with the same positions and mask
        (a batch of n variants may tile it n times). ``layer == n_layers`` applies only the final
        norm and unembedding. ``logits=False`` returns the residual after the last layer instead.
        With ``kv_cache`` (an object with the HF cache's ``update``), ``resid`` holds only the
        last positions ``p0..`` and the cache gives the keys and values of the positions before
        (see :mod:`mechscope.patching.prefix`); the layer arguments are cut to match.
        """
        if not 0 <= layer <= self.dims.n_layers:
            raise MechscopeError(f"layer must lie in [0, {self.dims.n_layers}], got {layer}")
        layers = self._m.module(self.family.layers)
        h = resid
        for i in range(layer, self.dims.n_layers):
            args, kwargs = inputs.call(i, resid.shape[0], resid, kv_cache)
            out = layers[i](h, *args, **kwargs)
            h = out[0] if isinstance(out, tuple) else out
        if not logits:
            return h
        return final_logits(self._m, h)
