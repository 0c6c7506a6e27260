"""Cost of structured generation: tokens/s of the default model with and without the Wordle guess constraint.

    python benchmarks/constrained_decoding.py [--backend cpu-fast] [--prompts 4] [--num-generations 8] [--repeats 3]

Workload: SmolLM2-135M-Instruct (the embedded default), P Wordle opening prompts (the course's system prompt and
history turn) x G sampled completions of at most 96 new tokens, temperature 1, 2 torch threads, float32, seeded per
group, through `rftune.rollout.generation.sample_completions` (the training rollout path). Settings, each run in
turn on the same seeds, alternating order over ``--repeats`` rounds (the best round is kept, against background
load):
    none      unconstrained
    span      the recipe's constraint: free text, then <guess>WORD</guess> with WORD one of the 12,972 allowed
              words in upper case (``choices_file: allowed.txt, case: upper, span: [<guess>, </guess>]``)
    word      the whole reply is one allowed word (``choices_file``, ``case: upper``), then EOS
Reported per setting: generated tokens, seconds, tokens/s, decoding steps, milliseconds per step, the share of the
time spent computing masks (the guide), and the trainer's mask replay (`Constraint.replay`) per token. The constraint
is compiled once before the rounds (its compile time is printed). Constrained replies differ from unconstrained
ones (lengths too), so compare ms/step and the mask share, not only tokens/s. The machine is shared: figures are
indicative.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from rftune.config import ConstraintConfig
from rftune.constraints import Guide, compile_constraint
from rftune.envs.wordle import wordle_messages
from rftune.model.loading import load_model_and_tokenizer
from rftune.rollout.generation import SamplingParams, eos_token_ids, sample_completions
from rftune.types import Sample

WORDS = str(Path(__file__).resolve().parents[1] / "src/rftune/data/wordle/allowed.txt")
SETTINGS = {
    "none": None,
    "span": ConstraintConfig(choices_file=WORDS, case="upper", span=["<guess>", "</guess>"]),
    "word": ConstraintConfig(choices_file=WORDS, case="upper"),
}


class MaskClock:
    """Sums the seconds spent in `Guide.mask_logits` and `Guide.advance` (the constraint's share of decoding)."""

    def __init__(self):
        self.seconds = 0.0
        self.steps = 0

    def wrap(self, method, counts_steps: bool):
        def timed(guide, *args):
            t0 = time.perf_counter()
            try:
                return method(guide, *args)
            finally:
                self.seconds += time.perf_counter() - t0
                self.steps += counts_steps
        return timed


def run(model, tokenizer, samples, params) -> dict:
    clock = MaskClock()
    mask_logits, advance = Guide.mask_logits, Guide.advance
    Guide.mask_logits, Guide.advance = clock.wrap(mask_logits, True), clock.wrap(advance, False)
    try:
        t0 = time.perf_counter()
        batch = sample_completions(model, tokenizer, samples, params)
        seconds = time.perf_counter() - t0
    finally:
        Guide.mask_logits, Guide.advance = mask_logits, advance
    tokens = int(batch.completion_mask.sum())
    t0 = time.perf_counter()
    if params.constraint is not None:
        params.constraint.replay(batch.completion_ids, batch.completion_mask)
    replay = time.perf_counter() - t0
    return {"tokens": tokens, "seconds": seconds, "steps": batch.completion_ids.shape[1], "mask_s": clock.seconds,
            "replay_us_per_token": replay / max(tokens, 1) * 1e6, "sample": batch.completions[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="cpu-fast", choices=["cpu-fast", "hf"])
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--num-generations", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--settings", default=",".join(SETTINGS))
    args = parser.parse_args()
    torch.set_num_threads(2)
    model, tokenizer = load_model_and_tokenizer("smollm2-135m-instruct")
    model.eval()
    eos = eos_token_ids(tokenizer, model)
    constraints = {}
    for name in args.settings.split(","):
        t0 = time.perf_counter()
        constraints[name] = compile_constraint(SETTINGS[name], tokenizer, eos)
        if SETTINGS[name] is not None:
            print(f"{name}: compiled in {time.perf_counter() - t0:.2f} s ({constraints[name].description})")
    samples = [Sample(wordle_messages([]), {}, i) for i in range(args.prompts)]
    best: dict[str, dict] = {}
    names = list(constraints)
    for round_ in range(args.repeats):
        for name in names if round_ % 2 == 0 else names[::-1]:
            params = SamplingParams(args.num_generations, args.max_new_tokens, backend=args.backend,
                                    seeds=tuple(range(args.prompts)), constraint=constraints[name])
            result = run(model, tokenizer, samples, params)
            if name not in best or result["seconds"] < best[name]["seconds"]:
                best[name] = result
    print(f"{args.prompts} prompts x {args.num_generations} completions, at most {args.max_new_tokens} new tokens, "
          f"backend {args.backend}, best of {args.repeats}")
    print(f"{'setting':<8} {'tokens':>7} {'seconds':>8} {'tokens/s':>9} {'steps':>6} {'ms/step':>8} {'mask share':>10} "
          f"{'replay us/token':>15}")
    for name, r in best.items():
        print(f"{name:<8} {r['tokens']:>7} {r['seconds']:>8.2f} {r['tokens'] / r['seconds']:>9.1f} {r['steps']:>6} "
              f"{r['seconds'] / r['steps'] * 1e3:>8.1f} {r['mask_s'] / r['seconds']:>10.1%} "
              f"{r['replay_us_per_token']:>15.1f}")
    for name, r in best.items():
        print(f"{name}: {r['sample'][:160]!r}")


if __name__ == "__main__":
    main()
