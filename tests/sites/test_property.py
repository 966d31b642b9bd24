"""Property: random tiny configs and random site interventions never leave hooks behind and never
change a later un-hooked forward."""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_hooks import n_torch_hooks
from transformers import AutoModelForCausalLM

from mechscope import HookedModel, MechscopeError
from mechscope.models.tiny import CONFIGS


@st.composite
def tiny_configs(draw):
    kind = draw(st.sampled_from(sorted(CONFIGS)))
    config = CONFIGS[kind]()
    layers = draw(st.integers(1, 3))
    kv = draw(st.sampled_from([1, 2, 4]))
    heads = kv * draw(st.integers(1, 2))
    d_head = draw(st.sampled_from([4, 8]))
    if kind in ("gpt2", "gptj"):
        config.n_layer, config.n_head, config.n_embd = layers, heads, heads * d_head
        if kind == "gptj":
            config.rotary_dim = d_head // 2
    else:
        config.num_hidden_layers, config.num_attention_heads = layers, heads
        config.hidden_size = heads * d_head
        if kind.startswith("falcon"):
            config.num_kv_heads = kv
        elif hasattr(config, "num_key_value_heads"):
            config.num_key_value_heads, config.head_dim = kv, d_head
    if getattr(config, "layer_types", None):  # one entry per layer, alternating as before
        config.layer_types = [config.layer_types[i % 2] for i in range(layers)]
    return kind, config


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
@given(data=st.data(), spec=tiny_configs())
def test_random_interventions_leave_no_trace(data, spec) -> None:
    kind, config = spec
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(config).eval()
    x = torch.randint(0, config.vocab_size, (2, data.draw(st.integers(1, 6))))
    with torch.no_grad():
        bare = hf(x).logits
        model = HookedModel(hf)
        before = n_torch_hooks(hf)
        names = data.draw(st.lists(st.sampled_from(sorted(model.sites)), min_size=1, max_size=4))
        scale = data.draw(st.floats(-2, 2))
        fail = data.draw(st.booleans())

        def intervene(t, hook):
            if fail and hook.name == names[-1]:
                raise RuntimeError("intervention failed")
            return t * scale

        try:
            model.run_with_hooks(x, fwd_hooks=[(n, intervene) for n in names])
        except RuntimeError:
            assert fail
        except MechscopeError as e:  # e.g. 0 * -inf masked scores: a NaN the hook refuses
            assert "NaN" in str(e)
        assert n_torch_hooks(hf) == before
        assert torch.equal(model(x), bare)
