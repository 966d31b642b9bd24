"""A Hugging Face causal LM run in-process as the explainer's or the judges' model.

Prompts go through the tokenizer's chat template (plain ``system\\n\\nuser`` when it has none),
left-padded into batches of similar length. :meth:`LocalBackend.generate` decodes greedily
and, when asked, reads each step's next-token distribution (the top candidates and the digits
0-9, for the simulation's expected digit, and Yes and No, for the numbered judge calls);
:meth:`LocalBackend.yes_no` reads one forward's next-token distribution and compares the mass on
"Yes"-like and "No"-like first tokens (any case, with or without a leading space).
"""

from __future__ import annotations

from typing import Any

import torch

from mechscope.autointerp.backend import NO, YES, Chat, Reply
from mechscope.autointerp.simulate import SCALE
from mechscope.errors import MechscopeError

__all__ = ["LocalBackend"]


class LocalBackend:
    """``local:MODEL``: the model is loaded once (``mechscope.models.loading.load_hf``)."""

    def __init__(
        self, model: str = "smollm2-135m", batch_size: int = 8, device: str | torch.device = "cpu"
    ) -> None:
        from mechscope.models.loading import load_hf

        self.name = f"local:{model}"
        try:
            self.model, self.tokenizer, _ = load_hf(model, progress=False, device=device)
        except MechscopeError:
            raise
        except (OSError, ValueError, KeyError) as exc:  # transformers' errors for a bad name
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise MechscopeError(
                f"cannot load model {model!r} for local:{model} ({first[:120]}): "
                "pass a hub id in the cache, a local folder, a .gguf file or smollm2-135m"
            ) from None
        self.model.eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.batch_size = batch_size
        self._yes_no_ids = (self._first_ids(YES), self._first_ids(NO))
        self._digit_ids = self._first_ids(tuple(map(str, SCALE)))
        self._yes_no = self._yes_no_ids[0] + self._yes_no_ids[1]

    def _first_ids(self, words: tuple[str, ...]) -> list[int]:
        ids = set()
        for word in words:
            for form in (word, word.capitalize(), " " + word, " " + word.capitalize()):
                ids.add(self.tokenizer.encode(form, add_special_tokens=False)[0])
        return sorted(ids)

    def _text(self, chat: Chat) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                chat, add_generation_prompt=True, tokenize=False
            )
        return "\n\n".join(m["content"] for m in chat) + "\n\n"

    def _batches(self, chats: list[Chat]) -> list[tuple[list[int], dict[str, torch.Tensor]]]:
        texts = [self._text(c) for c in chats]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = []
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            enc = self.tokenizer(
                [texts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False
            )
            out.append((idx, {k: v.to(self.model.device) for k, v in enc.items()}))
        return out

    @torch.inference_mode()
    def generate(
        self,
        chats: list[Chat],
        max_tokens: int,
        top_logprobs: int = 0,
        schemas: list[dict[str, Any] | None] | None = None,
    ) -> list[Reply]:
        """Greedy replies of at most ``max_tokens`` tokens; with ``top_logprobs``, each generated
        token's candidates: the most likely ones, the digits, Yes and No. ``schemas`` are not
        enforced in-process: the reply is free and its parser decides."""
        replies: list[Reply] = [Reply(error="not run")] * len(chats)
        for idx, enc in self._batches(chats):
            out = self.model.generate(
                **enc,
                max_new_tokens=max_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
                output_scores=bool(top_logprobs),
                return_dict_in_generate=True,
            )
            new = out.sequences[:, enc["input_ids"].shape[1] :]
            for b, (i, row) in enumerate(zip(idx, new, strict=True)):
                text = self.tokenizer.decode(row, skip_special_tokens=True).strip()
                lp = self._logprobs(row, [s[b] for s in out.scores], top_logprobs) if top_logprobs else None  # fmt: skip
                replies[i] = Reply(text, logprobs=lp)
        return replies

    def _logprobs(
        self, row: torch.Tensor, scores: list[torch.Tensor], k: int
    ) -> tuple[tuple[str, tuple[tuple[str, float], ...]], ...]:
        """(token, candidates) per generated token up to the end of the reply."""
        special = set(self.tokenizer.all_special_ids)
        steps = []
        for token, logits in zip(row.tolist(), scores, strict=False):
            if token in special:
                break
            logp = torch.log_softmax(logits.float(), dim=-1)
            ids = set(logp.topk(k).indices.tolist()) | set(self._digit_ids) | set(self._yes_no)
            decode = self.tokenizer.decode
            steps.append((decode([token]), tuple((decode([j]), float(logp[j])) for j in ids)))
        return tuple(steps)

    @torch.inference_mode()
    def yes_no(self, chats: list[Chat]) -> list[Reply]:
        """P(yes) from the next-token distribution after each prompt."""
        yes_ids, no_ids = self._yes_no_ids
        replies: list[Reply] = [Reply(error="not run")] * len(chats)
        for idx, enc in self._batches(chats):
            logits = self.model(**enc).logits[:, -1].float()
            probs = torch.softmax(logits, dim=-1)
            yes = probs[:, yes_ids].sum(-1)
            no = probs[:, no_ids].sum(-1)
            for i, y, n in zip(idx, yes.tolist(), no.tolist(), strict=True):
                if y + n <= 0:
                    replies[i] = Reply(error="no probability on Yes or No")
                    continue
                replies[i] = Reply("Yes" if y >= n else "No", y / (y + n))
        return replies
