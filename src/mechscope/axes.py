"""The axis glossary: every tensor shape in mechscope is written with these names.

=========  ==============================================================
batch      prompts in a batch
pos        token positions (``query_pos`` / ``key_pos`` inside attention)
d_model    width of the residual stream
head       attention heads (query heads; key/value heads under GQA for k, v)
d_head     width of one head
d_mlp      MLP hidden width (neurons)
d_vocab    vocabulary size
layer      transformer blocks
expert     mixture-of-experts experts
d_in       input width of a sparse dictionary
d_sae      number of dictionary latents
=========  ==============================================================

Shapes in docstrings and site tables use these names, e.g. ``[batch pos head d_head]``.
"""

AXES = (
    "batch",
    "pos",
    "query_pos",
    "key_pos",
    "d_model",
    "head",
    "d_head",
    "d_mlp",
    "d_vocab",
    "layer",
    "expert",
    "d_in",
    "d_sae",
)
