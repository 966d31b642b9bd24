"""A minimal OpenAI-compatible chat server over a Hugging Face model (the stand-in when llama.cpp's
server is not built): ``GET /v1/models`` and ``POST /v1/chat/completions`` with ``max_tokens``,
greedy decoding, and ``logprobs``/``top_logprobs`` of the first generated token.

    python hf_chat_server.py --model smollm2-135m --port 8099 [--alias smollm2]

It is mechscope's own code (``mechscope.models.loading.load_hf``, the tokenizer's chat template,
``generate``) behind uvicorn, one request at a time: a real HTTP server process for protocol
tests and timing, not an independent implementation of the model.
"""

from __future__ import annotations

import argparse
import asyncio
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
import uvicorn  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from mechscope.models.loading import load_hf  # noqa: E402


def build_app(model_name: str, alias: str) -> Starlette:
    model, tok, _ = load_hf(model_name, progress=False)
    model.eval()
    lock = asyncio.Lock()

    async def models(request: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": alias, "object": "model"}]})

    @torch.inference_mode()
    def complete(body: dict) -> dict:
        text = tok.apply_chat_template(body["messages"], add_generation_prompt=True, tokenize=False)
        ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        out = model.generate(ids, max_new_tokens=int(body.get("max_tokens") or 16),
                             do_sample=False, pad_token_id=tok.eos_token_id,
                             output_scores=True, return_dict_in_generate=True)  # fmt: skip
        new = out.sequences[0, ids.shape[1] :]
        choice: dict = {"index": 0, "finish_reason": "stop",
                        "message": {"role": "assistant",
                                    "content": tok.decode(new, skip_special_tokens=True)}}  # fmt: skip
        if body.get("logprobs"):
            logp = torch.log_softmax(out.scores[0][0].float(), -1)
            k = int(body.get("top_logprobs") or 1)
            top = torch.topk(logp, k)
            entries = [{"token": tok.decode([int(i)]), "logprob": float(v)}
                       for v, i in zip(top.values, top.indices, strict=True)]  # fmt: skip
            first = int(new[0])
            choice["logprobs"] = {"content": [{"token": tok.decode([first]),
                                               "logprob": float(logp[first]),
                                               "top_logprobs": entries}]}  # fmt: skip
        return {"object": "chat.completion", "model": alias, "choices": [choice]}

    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        if body.get("model") not in (None, alias):
            return JSONResponse({"error": {"message": f"model {body['model']} not found"}}, 404)
        async with lock:
            result = await asyncio.to_thread(complete, body)
        return JSONResponse(result)

    routes = [Route("/v1/models", models), Route("/v1/chat/completions", chat, methods=["POST"])]
    return Starlette(routes=routes)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--alias", default="smollm2")
    parser.add_argument("--port", type=int, default=8099)
    args = parser.parse_args()
    torch.set_num_threads(1)
    uvicorn.run(
        build_app(args.model, args.alias), host="127.0.0.1", port=args.port, log_level="warning"
    )
