"""Optional vLLM generation backend (``generation.backend: vllm``, ``pip install rftune[vllm]``), for GPU machines.

vLLM is imported only when this backend is constructed, never on the default (HF / CPU) path. The engine runs in
the training process (colocated, like TRL's ``vllm_mode="colocate"``) and holds a plain copy of the model: after
every optimizer step the trainer calls `VllmSampler.sync_weights`, which pushes the *merged* effective weights
W + scale * B @ A (computed from the base weights; the trained model is never merged in place) into the engine.

Sampling uses the same parameters (temperature, top-p, top-k with 0 meaning off, the EOS set, max_new_tokens);
vLLM's sampler is its own implementation of that distribution, and its random stream is seeded from torch's, so a
run is reproducible but does not draw the same tokens as the HF backend. This backend has not been run in rftune's
CI (no GPU there); the weight loading uses vLLM's in-process model runner as TRL does, which needs
``VLLM_ENABLE_V1_MULTIPROCESSING=0`` (set here before vLLM is imported).

Under ``generation.constraint`` vLLM decodes with its own guided decoding, on its llguidance ("guidance") backend
and the constraint's Lark grammar (`guided_decoding`): the engine and grammar rftune samples with on the CPU, so
the trainer's replayed masks (`rftune.constraints.Constraint.replay`) are the ones vLLM applied.
"""

from __future__ import annotations

import os

import torch

from rftune.algo.lora import effective_weight, merged_weight
from rftune.constraints import vllm_grammar
from rftune.errors import ConfigError
from rftune.rollout.generation import BACKENDS, SamplingParams, encode_prompts, eos_token_ids, rollout_batch
from rftune.types import RolloutBatch, Sample

GPU_MEMORY_UTILIZATION = 0.3  # leave most of the GPU to training, as TRL's colocate mode does


@BACKENDS.register("vllm")
class VllmSampler:
    """A `rollout_fn` backed by an in-process vLLM engine: ``sampler(model, tokenizer, samples, params)``."""

    in_process = False  # an engine of its own, for training rollouts; in-process generation uses auto

    @staticmethod
    def check(model, device: torch.device) -> None:
        if device.type != "cuda":
            raise ConfigError("generation.backend=vllm needs the model on a CUDA GPU; use generation.backend=auto here")

    def __init__(self, model_path: str, dtype: str, model, constraint=None):
        if not torch.cuda.is_available():
            raise ConfigError("generation.backend=vllm needs a CUDA GPU; use generation.backend=auto on this machine")
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        try:
            from vllm import LLM
        except ImportError as exc:
            raise ConfigError("generation.backend=vllm needs vLLM: pip install 'rftune[vllm]'") from exc
        self.engine_options, self.request_options = guided_decoding(constraint) if constraint else ({}, {})
        self.llm = LLM(model=model_path, dtype=dtype, gpu_memory_utilization=GPU_MEMORY_UTILIZATION,
                       enable_prefix_caching=True, **self.engine_options)
        self.sync_weights(model)

    def sync_weights(self, model) -> None:
        """Load the model's current merged weights into the engine (call after every optimizer step)."""
        runner_model = self.llm.llm_engine.model_executor.driver_worker.worker.model_runner.model
        with torch.no_grad():
            runner_model.load_weights(merged_state(model))
        self.llm.reset_prefix_cache()

    def __call__(self, model, tokenizer, samples: list[Sample], params: SamplingParams) -> RolloutBatch:
        from vllm import SamplingParams as VllmParams

        prompt_ids, prompt_mask = encode_prompts(tokenizer, [s.prompt for s in samples])  # [P, Tp]
        eos_ids = eos_token_ids(tokenizer, model)
        sampling = VllmParams(n=params.num_generations, temperature=params.temperature, top_p=params.top_p,
                              top_k=params.top_k or -1, max_tokens=params.max_new_tokens, stop_token_ids=eos_ids,
                              seed=int(torch.randint(0, 2**31 - 1, ()).item()), **self.request_options)
        requests = [{"prompt_token_ids": ids[mask.bool()].tolist()} for ids, mask in zip(prompt_ids, prompt_mask)]
        outputs = self.llm.generate(requests, sampling, use_tqdm=False)
        rows = [list(c.token_ids) for out in outputs for c in out.outputs]  # grouped by prompt
        width = max(1, max(len(r) for r in rows))
        completion_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
        for i, row in enumerate(rows):
            completion_ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
        g = params.num_generations
        return rollout_batch(tokenizer, samples, prompt_ids.repeat_interleave(g, 0),
                             prompt_mask.repeat_interleave(g, 0), completion_ids, eos_ids, g, params.max_new_tokens)


def guided_decoding(constraint) -> tuple[dict, dict]:
    """(engine keyword arguments, sampling keyword arguments) that make vLLM decode under `constraint` with its
    llguidance backend: ``structured_outputs`` in vLLM >= 0.10.2, ``guided_decoding`` before."""
    try:
        from vllm.sampling_params import StructuredOutputsParams
    except ImportError:
        from vllm.sampling_params import GuidedDecodingParams

        return {"guided_decoding_backend": "guidance"}, {
            "guided_decoding": GuidedDecodingParams(grammar=vllm_grammar(constraint), backend="guidance")}
    return {"structured_outputs_config": {"backend": "guidance"}}, {
        "structured_outputs": StructuredOutputsParams(grammar=vllm_grammar(constraint))}


def merged_state(model):
    """(name, tensor) pairs of a plain checkpoint of the model's effective weights: LoRA layers merged."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    for name, module in inner.named_modules():
        if hasattr(module, "base_layer") and hasattr(module, "lora_A"):
            weight, factors, bias = effective_weight(module)
            yield f"{name}.weight", merged_weight(weight, factors)
            if bias is not None:
                yield f"{name}.bias", bias.detach()
    for name, param in inner.named_parameters(remove_duplicate=False):  # tied weights under both names
        if "lora_" not in name and ".base_layer." not in name:
            yield name, param.detach()
