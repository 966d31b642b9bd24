"""Model diffing: what a finetune changed (docs/diff.md).

One file per method: ``kl`` (KL by token), ``lens`` (the activation-difference lens and
steering), ``crosscoder`` (a dictionary over both models, relative decoder norms, latent scaling)
with its training in ``crosscoder_train``; ``run`` puts them together for ``mechscope diff``.
"""
