"""Benchmark: Wordle feedback scoring speed.

Prints the seconds to score a batch of 64 guesses against the full 12,972-word allowed list (as the
wordle_guess_value reward does on a first turn), next to the same work done by the simple per-pair reference
`feedback` on a sample, scaled up, and the time for the solver's opening (all allowed words vs all answers).

Run: .venv/bin/python benchmarks/wordle_guess_value.py
"""

from __future__ import annotations

import random
import time

from rftune.envs.wordle.game import feedback
from rftune.envs.wordle.patterns import expected_information, pattern_codes
from rftune.envs.wordle.rewards import wordle_guess_value
from rftune.envs.wordle.words import allowed_words, answer_words, encode


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    allowed, answers = allowed_words(), answer_words()
    guesses = random.Random(0).sample(allowed.words, 64)
    encoded = encode(guesses)
    codes = best_of(5, lambda: pattern_codes(encoded, allowed.encoded))
    info = best_of(5, lambda: expected_information(encoded, allowed.encoded))
    replies = [f"<think>.</think><guess>{g}</guess>" for g in guesses]
    example = {"secret": "crane", "past_guess_history": []}
    reward = best_of(3, lambda: [wordle_guess_value(None, r, example) for r in replies])
    sample = allowed.words[:500]
    simple = best_of(1, lambda: [feedback(g, s) for g in guesses[:4] for s in sample])
    simple_scaled = simple * (64 / 4) * (len(allowed) / len(sample))
    opener = best_of(1, lambda: expected_information(allowed.encoded, answers.encoded))
    print(f"64 guesses x {len(allowed)} words, feedback codes:          {codes:.3f} s")
    print(f"64 guesses x {len(allowed)} words, expected information:    {info:.3f} s")
    print(f"64 wordle_guess_value calls, first turn (one at a time):  {reward:.3f} s")
    print(f"simple per-pair feedback, same 64 x {len(allowed)} (scaled):  {simple_scaled:.3f} s")
    print(f"solver opening: {len(allowed)} guesses x {len(answers)} answers:  {opener:.3f} s")


if __name__ == "__main__":
    main()
