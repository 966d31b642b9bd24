"""The axis glossary: every tensor shape in mechscope is written with these names.

==========  ==============================================================
batch       prompts in a batch
pos         token positions
query_pos   positions that attend (rows of an attention pattern)
key_pos     positions attended to (columns of an attention pattern)
d_model     width of the residual stream
head        attention heads (query heads; key/value heads under GQA for k, v)
d_head      width of one head
d_mlp       MLP hidden width (neurons)
d_vocab     vocabulary size
layer       transformer blocks
expert      mixture-of-experts experts
top_k       the experts a router chooses per token (slots, best first)
one         a kept axis of size 1 (``ln_final.hook_scale [batch pos one]``)
d_in        input width of a sparse dictionary
d_sae       number of dictionary latents
d_out       output width of a transcoder
==========  ==============================================================

Shapes in docstrings, site tables (:attr:`mechscope.sites.Site.axes`) and docs use these names,
e.g. ``[batch pos head d_head]``. This module holds the glossary only; nothing imports it.
"""
