"""The pyvene side of bench_das.py: one fixed-basis interchange intervention and a DAS run.

    /work/peers/venv-pyvene/bin/python benchmarks/peers/run_pyvene_das.py SPEC.pt OUT.pt

SPEC.pt (written by bench_das.py, read with ``weights_only=True``) holds the model folder or
name, the layer, position and subspace size, the counterfactual pairs, a fixed orthonormal basis
and the training settings. OUT.pt gets the intervened logits of the fixed basis, the held-out IIA
after training and the seconds of every training step. The intervention is pyvene's
``LowRankRotatedSpaceIntervention`` on ``block_input`` (the residual stream entering the layer)
at one position; training follows pyvene's DAS tutorials (Adam on the rotation, cross-entropy of
the last position's logits against the counterfactual label), with the same minibatches as
mechscope (the same seeded ``torch.randint`` draws).
"""

from __future__ import annotations

import sys
import time

import pyvene as pv
import torch


def load(spec: dict) -> torch.nn.Module:
    if spec["model"] == "smollm2-135m":
        from mechscope.models.loading import load_hf  # the bare HF model, as mechscope loads it

        return load_hf("smollm2-135m", progress=False)[0].eval()
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(spec["model"]).eval()


def intervenable(hf: torch.nn.Module, layer: int, k: int) -> tuple[pv.IntervenableModel, object]:
    config = pv.IntervenableConfig(
        representations=[
            {"layer": layer, "component": "block_input", "unit": "pos", "low_rank_dimension": k}
        ],
        intervention_types=pv.LowRankRotatedSpaceIntervention,
    )
    iv = pv.IntervenableModel(config, hf)
    iv.disable_model_gradients()
    intervention = next(iter(iv.interventions.values()))
    return iv, intervention[0] if isinstance(intervention, tuple) else intervention


def run(
    iv: pv.IntervenableModel, base: torch.Tensor, source: torch.Tensor, pos: int
) -> torch.Tensor:
    n = base.shape[0]
    where = [[[pos]] * n]
    _, out = iv({"input_ids": base}, [{"input_ids": source}], {"sources->base": (where, where)})
    return out.logits


def main(spec_path: str, out_path: str) -> None:
    spec = torch.load(spec_path, weights_only=True)
    torch.set_num_threads(1)
    hf = load(spec)
    layer, pos, k = spec["layer"], spec["position"], spec["k"]
    iv, intervention = intervenable(hf, layer, k)
    with torch.no_grad():
        intervention.rotate_layer.weight = spec[
            "basis"
        ]  # orthogonal parametrisation: right_inverse
        fixed = run(iv, spec["base"], spec["source"], pos)
    train_b, train_s, train_y = spec["train_base"], spec["train_source"], spec["train_label"]
    intervention.rotate_layer.weight = spec["init"]
    opt = torch.optim.Adam(iv.get_trainable_parameters(), lr=spec["lr"])
    g = torch.Generator().manual_seed(spec["seed"])
    times, cpu = [], []
    total = time.process_time()
    for _ in range(spec["steps"]):
        index = torch.randint(len(train_b), (spec["batch_size"],), generator=g)
        start, cpu0 = time.perf_counter(), time.process_time()
        logits = run(iv, train_b[index], train_s[index], pos)[:, -1]
        loss = torch.nn.functional.cross_entropy(logits.float(), train_y[index])
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu0)
    with torch.no_grad():
        test_logits = run(iv, spec["test_base"], spec["test_source"], pos)[:, -1]
    correct = test_logits.argmax(-1) == spec["test_label"]
    torch.save(
        {
            "fixed_logits": fixed,
            "test_correct": correct,
            "step_seconds": torch.tensor(times),
            "step_cpu": torch.tensor(cpu),
            "total_cpu": torch.tensor(time.process_time() - total),  # steps + held-out IIA
        },
        out_path,
    )
    print(
        f"pyvene: IIA {float(correct.float().mean()):.3f}, {sum(times) / len(times) * 1000:.1f} ms/step"
    )


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
