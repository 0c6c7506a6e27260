"""GRPO step time: rftune against TRL's GRPOTrainer on the same workload, in one invocation.

    .venv/bin/python benchmarks/grpo_step.py                      # beta 0.04, G 8, both in bf16
    .venv/bin/python benchmarks/grpo_step.py --beta 0
    .venv/bin/python benchmarks/grpo_step.py --num-generations 16
    .venv/bin/python benchmarks/grpo_step.py --frameworks rftune-fp32,trl-fp32   # both in float32
    python benchmarks/grpo_step.py --device cuda --model smollm2-135m-random      # on a GPU (scripts/gpu_check.sh)

Workload: SmolLM2-135M-Instruct (the embedded default; ``--model smollm2-135m-random`` or ``qwen2.5-1.5b-random``:
a random-init model of that shape with the default model's tokenizer, for GPU machines without the weights), LoRA
r=16 (alpha 32) on all linear layers, P prompts x G generations per step, at most 64 new tokens, temperature 1.0,
loss grpo, the same arithmetic prompts in the same
order ("What is A + B? Answer with the number only."), the same reward (the last number equals A + B), the same
seed, learning rate, Adam betas and clipping, 2 torch threads, the same loss (TRL's bias-corrected KL, its 1.16
default, is switched off: rftune's loss is the plain k3 term; tests/algo/test_trl_parity.py shows the two losses
equal on the same inputs). ``trl`` runs with bf16=True and no gradient checkpointing (its best CPU settings per
the issue, on a CPU with native bf16); ``rftune`` runs with ``train.bf16: true`` (bf16 matmuls, float32 residual
stream and log-probs, as TRL's autocast). ``trl-fp32`` and ``rftune-fp32`` are the same in float32, the faster
setting on CPUs without native bf16 (AVX2 only). Any of the four may run side by side (``--frameworks``); each
rftune variant is compared with the TRL variant of its dtype.

Each framework runs in its own subprocess (so peak RSS is per framework). The two processes advance in lockstep,
one step at a time, alternating which goes first, so both see the same background load. The matmul peak (fp32 and
bf16, GFLOP/s, best of a few GEMM shapes of this model) is measured in the parent before the steps.

Two FLOP figures, which must not be confused. With N = parameters of all matmul weights (the tied output
projection included), a pass over S real tokens (no padding) costs 2·N·S in the forward and 2·N·S more in a LoRA
backward (no base-weight gradients): generation 2·N·S, reference 2·N·S (beta > 0 only), policy 4·N·S.
Attention-score FLOPs are left out.
- ``workload GFLOP/s`` counts the workload, the same for every implementation: S = every row's prompt + completion
  tokens (a prompt counted G times, once per completion). A throughput, not a utilisation: an implementation that
  skips repeated work can exceed the machine's peak in this figure.
- ``utilisation`` counts the FLOPs the implementation needs, against the matmul peak of its own dtype: TRL runs every
  row's prompt in every pass; rftune runs a group's prompt once in the reference and policy passes and, in
  generation, the prompts' common prefix once and each prompt's remainder once. This one cannot exceed 100% (up to
  the error of the measured peak).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MARK = "@@"  # worker result lines start with this; everything else on stdout is a library's chatter
LEARNING_RATE = 1e-5
SEED = 42


# ----------------------------------------------------------------------------------------------- the workload
def arithmetic_rows(count: int, seed: int = SEED) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        rows.append({"prompt": [{"role": "user", "content": f"What is {a} + {b}? Answer with the number only."}],
                     "answer": str(a + b)})
    return rows


def correct(completion: str, answer: str) -> float:
    from rftune.rewards.builtin import exact_answer

    return exact_answer(None, completion, {"answer": answer}, require_tag=False)


def matmul_params(model) -> int:
    import torch

    return sum(m.weight.numel() for m in model.modules()
               if isinstance(m, torch.nn.Linear) and min(m.weight.shape) > 64)  # LoRA factors have a side of r


# ----------------------------------------------------------------------------------------------- peak GFLOP/s
def measure_peak(threads: int, device: str = "cpu") -> dict[str, float]:
    """Best GFLOP/s of F.linear over square and model-shaped GEMMs, fp32 and bf16."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    shapes = [(1024, 1024, 1024), (2048, 576, 1536), (2048, 1536, 576), (512, 576, 49152)]
    peak = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        best = 0.0
        for m, k, n in shapes:
            x, w = torch.randn(m, k, dtype=dtype, device=device), torch.randn(n, k, dtype=dtype, device=device)
            F.linear(x, w)
            sync()
            reps, start = 0, time.perf_counter()
            while reps < 3 or time.perf_counter() - start < 0.5:
                F.linear(x, w)
                reps += 1
                sync()
            best = max(best, 2 * m * k * n * reps / (time.perf_counter() - start) / 1e9)
        peak[name] = best
    return peak


# ----------------------------------------------------------------------------------------------- the model
SHAPES = {  # transformers config fields of real models, for random-init stand-ins (the weights are not on PyPI)
    "smollm2-135m-random": None,  # the embedded default's own config
    "qwen2.5-1.5b-random": {"model_type": "qwen2", "hidden_size": 1536, "intermediate_size": 8960,
                            "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2,
                            "max_position_embeddings": 32768, "rope_theta": 1e6, "rms_norm_eps": 1e-6,
                            "vocab_size": 151936, "tie_word_embeddings": True, "hidden_act": "silu"},
}


def build_model(name: str) -> str:
    """The folder of the model to train: the embedded default, or a random-init model of a listed shape saved
    (once per run of this script) with the default model's tokenizer."""
    from rftune.model.loading import default_model_dir, load_tokenizer

    if name == "default":
        return str(default_model_dir())
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    shape = SHAPES[name]
    config = AutoConfig.from_pretrained(default_model_dir()) if shape is None else AutoConfig.for_model(**shape)
    torch.manual_seed(SEED)
    folder = Path(tempfile.mkdtemp(prefix=f"grpo-bench-{name}-"))
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).save_pretrained(folder)
    tokenizer = load_tokenizer(str(default_model_dir()))
    tokenizer.save_pretrained(folder)
    return str(folder)


# ----------------------------------------------------------------------------------------------- workers
def wait_for_step() -> bool:
    line = sys.stdin.readline()
    return line.strip() == "step"


def emit(record: dict) -> None:
    print(MARK + json.dumps(record), flush=True)


def rftune_worker(args) -> None:
    import torch

    from rftune.config import config_from_dict
    from rftune.train.trainer import GRPOTrainer

    torch.set_num_threads(args.threads)
    rows = arithmetic_rows(args.prompts * (args.warmup + args.steps))
    config = config_from_dict({
        "generation": {"num_generations": args.num_generations, "max_new_tokens": args.max_new_tokens,
                       "temperature": 1.0},
        "algorithm": {"beta": args.beta, "loss_type": "grpo"},
        "lora": {"r": 16, "alpha": 32, "target_modules": "all-linear"},
        "model": {"name_or_path": args.model_path},
        "train": {"batch_size": args.prompts * args.num_generations, "threads": args.threads, "seed": SEED,
                  "device": args.device,
                  "bf16": not args.fp32,
                  "learning_rate": LEARNING_RATE, "adam_beta2": 0.999, "lr_scheduler": "constant",
                  "output_dir": tempfile.mkdtemp(prefix="grpo-bench-"), "max_steps": 10_000, "save_steps": 0,
                  "log_completions": False}})
    trainer = GRPOTrainer(config, reward_funcs=[lambda prompt, completion, example: correct(completion,
                                                                                            example["answer"])],
                          dataset=rows, progress=False)
    n_params = matmul_params(trainer.model)
    stream = _SequentialStream()
    emit({"ready": True})
    while wait_for_step():
        metrics = trainer.step(stream)
        rollout_tokens = metrics["completion_len/mean"] * config.train.batch_size
        emit({"time": metrics["time/step"], "generation": metrics["time/generation"],
              "reference": metrics.get("time/reference", 0.0),
              "training": metrics["time/update"],
              "completion_tokens": rollout_tokens, **_rftune_prompt_tokens(trainer, stream, args),
              "params": n_params, "peak_rss_mb": _peak_rss_mb()})


class _SequentialStream:
    """Prompts in dataset order (TRL is run with shuffle_dataset=False), so both frameworks see the same ones."""

    def __init__(self):
        self.position = 0
        self.last = []

    def take(self, count: int) -> list[int]:
        self.last = list(range(self.position, self.position + count))
        self.position += count
        return self.last

    def next_positions(self, count: int) -> list[int]:
        return list(range(self.position, self.position + count))


def _rftune_prompt_tokens(trainer, stream, args) -> dict[str, int]:
    """Prompt tokens of the workload (every row's) and those rftune computes in generation and in training."""
    from rftune.cpu.fast_decode import MIN_SHARED_PREFIX, common_prefix_length
    from rftune.rollout.generation import encode_prompts

    ids, mask = encode_prompts(trainer.tokenizer, [trainer.task.samples[i].prompt for i in stream.last])
    once_each = int(mask.sum())
    shared = common_prefix_length(ids, mask)
    shared = shared if shared >= MIN_SHARED_PREFIX else 0
    return {"prompt_tokens": once_each * args.num_generations,
            "generation_prompt_tokens": once_each - shared * (ids.shape[0] - 1),  # the common prefix once
            "training_prompt_tokens": once_each}  # a group's prompt once per pass


def trl_worker(args) -> None:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from rftune.model.loading import load_tokenizer

    torch.set_num_threads(args.threads)
    rows = arithmetic_rows(args.prompts * (args.warmup + args.steps))

    def reward(prompts, completions, answer, **kwargs):
        return [correct(c[-1]["content"] if isinstance(c, list) else c, a) for c, a in zip(completions, answer)]

    batch = args.prompts * args.num_generations
    if batch % args.trl_grad_accum:
        raise SystemExit(f"--trl-grad-accum {args.trl_grad_accum} must divide the batch of {batch} completions")
    config = GRPOConfig(
        output_dir=tempfile.mkdtemp(prefix="grpo-bench-trl-"), per_device_train_batch_size=batch // args.trl_grad_accum,
        gradient_accumulation_steps=args.trl_grad_accum, num_generations=args.num_generations,
        max_completion_length=args.max_new_tokens, temperature=1.0, top_p=1.0, top_k=0, beta=args.beta,
        loss_type="grpo", use_bias_correction_kl=False, bf16=not args.fp32,
        gradient_checkpointing=False, use_cpu=args.device == "cpu", learning_rate=LEARNING_RATE,
        lr_scheduler_type="constant",
        max_grad_norm=1.0, seed=SEED, max_steps=args.warmup + args.steps, logging_steps=1, save_strategy="no",
        report_to="none", shuffle_dataset=False, num_iterations=1, dataloader_num_workers=0,
        disable_tqdm=True)
    tokenizer = load_tokenizer(args.model_path)
    trainer = GRPOTrainer(model=args.model_path, reward_funcs=reward, args=config,
                          train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                          peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                                 target_modules="all-linear", task_type="CAUSAL_LM"))
    timer = _TrlTimer(trainer)
    n_params = matmul_params(trainer.model)

    class Lockstep(TrainerCallback):
        def on_step_begin(self, *a, **k):
            if not wait_for_step():
                raise SystemExit(0)
            timer.start()

        def on_step_end(self, *a, **k):
            emit({**timer.stop(), "params": n_params, "peak_rss_mb": _peak_rss_mb()})

    trainer.add_callback(Lockstep())
    emit({"ready": True})
    trainer.train()


class _TrlTimer:
    """Wraps TRL's generation and no-grad log-prob calls to split the step time, and counts tokens."""

    def __init__(self, trainer):
        import torch

        self.parts = {}
        generate, logps = trainer._generate, trainer._get_per_token_logps_and_entropies

        def timed_generate(*a, **k):
            t0 = time.perf_counter()
            out = generate(*a, **k)
            self.parts["generation"] += time.perf_counter() - t0
            self.parts["prompt_tokens"] += sum(len(ids) for ids in out[0])  # every row's prompt, in every pass
            self.parts["completion_tokens"] += sum(len(ids) for ids in out[1])
            return out

        def timed_logps(*a, **k):
            t0 = time.perf_counter()
            out = logps(*a, **k)
            if not torch.is_grad_enabled():
                self.parts["reference"] += time.perf_counter() - t0
            return out

        trainer._generate, trainer._get_per_token_logps_and_entropies = timed_generate, timed_logps

    def start(self) -> None:
        self.parts = {"generation": 0.0, "reference": 0.0, "prompt_tokens": 0, "completion_tokens": 0}
        self.t0 = time.perf_counter()

    def stop(self) -> dict:
        total = time.perf_counter() - self.t0
        return {**self.parts, "time": total, "training": total - self.parts["generation"] - self.parts["reference"]}


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------------------------- the parent
def spawn(framework: str, args) -> subprocess.Popen:
    worker = framework.removesuffix("-fp32")
    command = [sys.executable, __file__, "--worker", worker, "--beta", str(args.beta), "--num-generations",
               str(args.num_generations), "--prompts", str(args.prompts), "--max-new-tokens",
               str(args.max_new_tokens), "--threads", str(args.threads), "--warmup", str(args.warmup), "--steps",
               str(args.steps), "--trl-grad-accum", str(args.trl_grad_accum), "--device", args.device,
               "--model-path", args.model_path] + (
                  ["--fp32"] if framework.endswith("-fp32") else [])
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               TOKENIZERS_PARALLELISM="false", TRANSFORMERS_VERBOSITY="error", PYTHONWARNINGS="ignore")
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)


def read_record(process: subprocess.Popen, name: str) -> dict:
    for line in process.stdout:
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    raise RuntimeError(f"{name} worker exited (code {process.wait()}) before reporting")


def run_lockstep(frameworks: list[str], args) -> dict[str, list[dict]]:
    processes = {name: spawn(name, args) for name in frameworks}
    for name, process in processes.items():
        read_record(process, name)
    records: dict[str, list[dict]] = {name: [] for name in frameworks}
    for step in range(args.warmup + args.steps):
        order = frameworks if step % 2 == 0 else frameworks[::-1]
        for name in order:
            processes[name].stdin.write("step\n")
            processes[name].stdin.flush()
            record = read_record(processes[name], name)
            records[name].append(record)
            print(f"  step {step + 1} {name}: {record['time']:.1f}s (gen {record['generation']:.1f}, ref "
                  f"{record['reference']:.1f}, train {record['training']:.1f}; load {os.getloadavg()[0]:.1f})",
                  flush=True)
    for process in processes.values():
        process.stdin.close()
        process.wait(timeout=120)
    return records


def summarize(records: list[dict], peak: dict[str, float], beta: float, own_peak: str, warmup: int) -> dict:
    timed = records[warmup:] or records[-1:]
    med = lambda key: statistics.median(r[key] for r in timed)  # noqa: E731
    passes = 2 + (2 if beta > 0 else 0) + 4  # generation, reference, policy forward + backward (x N x tokens)
    workload = [r["params"] * (r["prompt_tokens"] + r["completion_tokens"]) * passes for r in timed]
    needed = [_needed_flops(r, beta) for r in timed]
    return {"step_s": med("time"), "tokens_per_s": statistics.median(r["completion_tokens"] / r["time"] for r in timed),
            "generation_s": med("generation"), "reference_s": med("reference"), "training_s": med("training"),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in records),
            "workload_gflops": statistics.median(f / r["time"] / 1e9 for f, r in zip(workload, timed)),
            "utilisation": statistics.median(f / r["time"] / 1e9 / peak[own_peak] for f, r in zip(needed, timed)),
            "completion_tokens": med("completion_tokens"), "steps": [round(r["time"], 2) for r in timed]}


def _needed_flops(record: dict, beta: float) -> float:
    """Matmul FLOPs of one step as the implementation computes it (its own prompt token counts per pass)."""
    completion = record["completion_tokens"]
    generation = record.get("generation_prompt_tokens", record["prompt_tokens"]) + completion
    training = record.get("training_prompt_tokens", record["prompt_tokens"]) + completion
    return record["params"] * (2 * generation + (2 if beta > 0 else 0) * training + 4 * training)


def pairs(frameworks: list[str]) -> list[tuple[str, str]]:
    """(rftune variant, TRL variant) to compare: the same dtype when both are run, else every pair."""
    ours = [f for f in frameworks if f.startswith("rftune")]
    peers = [f for f in frameworks if f.startswith("trl")]
    same = [(o, p) for o in ours for p in peers if o.endswith("-fp32") == p.endswith("-fp32")]
    return same if len(same) == min(len(ours), len(peers)) else [(o, p) for o in ours for p in peers]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--beta", type=float, default=0.04)
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=4, help="prompts per step")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3, help="timed steps after the warm-up")
    parser.add_argument("--frameworks", default="rftune,trl",
                        help="comma-separated: rftune and trl (bfloat16 matmuls), rftune-fp32 and trl-fp32")
    parser.add_argument("--trl-grad-accum", type=int, default=1,
                        help="TRL micro-batches per step (the same completions per step; G 16 in one micro-batch "
                             "needs over 19 GB in TRL)")
    parser.add_argument("--fp32", action="store_true", help=argparse.SUPPRESS)  # a worker runs in float32
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where both frameworks train")
    parser.add_argument("--model", choices=["default", *SHAPES], default="default",
                        help="the embedded default model, or a random-init model of a real shape")
    parser.add_argument("--model-path", help=argparse.SUPPRESS)  # a worker's model folder
    parser.add_argument("--worker", choices=["rftune", "trl"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        (rftune_worker if args.worker == "rftune" else trl_worker)(args)
        return
    from rftune.cpu.features import cpu_features

    machine = f"{cpu_features().describe()}, {os.cpu_count()} cores"
    if args.device == "cuda":
        import torch

        machine = f"{torch.cuda.get_device_name()} (host: {machine})"
    print(f"machine: {machine}; model: {args.model}", flush=True)
    args.model_path = build_model(args.model)
    peak = measure_peak(args.threads, args.device)
    print(f"matmul peak ({args.threads} threads): fp32 {peak['fp32']:.1f} GFLOP/s, bf16 {peak['bf16']:.1f} GFLOP/s",
          flush=True)
    frameworks = args.frameworks.split(",")
    records = run_lockstep(frameworks, args)
    results = {name: summarize(records[name], peak, args.beta, "fp32" if name.endswith("-fp32") else "bf16",
                               args.warmup) for name in frameworks}
    for name, r in results.items():
        print(f"{name:>11}: {r['step_s']:.2f} s/step (median of {r['steps']}), {r['tokens_per_s']:.1f} completion "
              f"tok/s, generation {r['generation_s']:.2f} s / reference {r['reference_s']:.2f} s / training "
              f"{r['training_s']:.2f} s, peak RSS {r['peak_rss_mb']:.0f} MB, workload {r['workload_gflops']:.1f} "
              f"GFLOP/s, utilisation {100 * r['utilisation']:.1f}% of its dtype's matmul peak")
    setting = f"beta={args.beta:g},G={args.num_generations}"
    for ours, peer in pairs(frameworks):
        ratio = results[peer]["step_s"] / results[ours]["step_s"]
        print(f"grpo_step: {ours} {results[ours]['step_s']:.1f}s {peer} {results[peer]['step_s']:.1f}s "
              f"ratio {ratio:.1f}x ({setting})")
    if args.json:
        Path(args.json).write_text(json.dumps({"setting": setting, "machine": machine, "model": args.model,
                                               "peak_gflops": peak, "results": results}, indent=2))


if __name__ == "__main__":
    main()
