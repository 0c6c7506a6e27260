"""Structured-generation engines on the 12,972-word Wordle choice constraint: compile time, per-token mask time, memory.

    python benchmarks/constraint_engines.py [--engines llguidance,xgrammar,outlines-core] [--words 40]

The constraint: the reply is one word of ``rftune/data/wordle/allowed.txt`` in upper case, then EOS, with the
default model's tokenizer (SmolLM2, 49,152 tokens). Each engine runs in its own subprocess (so its memory is its
own) and reports:
    tokenizer_s   building the engine's view of the tokenizer (once per tokenizer)
    compile_s     compiling the constraint (once per constraint)
    first_mask_ms the first token mask of a fresh completion (where lazily built structures are paid)
    cold_us       mean time of one token mask over `--words` seeded words spelled token by token, the first time
                  (an engine that builds its automaton lazily pays here), and the slowest of them (max_us)
    warm_us       the same words a second time (what a training run pays once the words recur)
    rss_mb        resident memory added by tokenizer view + compiled constraint + one matcher
    allowed_0     tokens allowed at the first step (the engines must agree)
Only rftune's engine (llguidance) is a dependency; install the others to compare (``pip install --no-deps
xgrammar apache-tvm-ffi outlines-core``: xgrammar's triton dependency serves its GPU kernel only). The machine is
shared: the figures are indicative.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ENGINES = ("llguidance", "xgrammar", "outlines-core")
WORDS = Path(__file__).resolve().parents[1] / "src/rftune/data/wordle/allowed.txt"


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def load():
    import torch

    from rftune.model.loading import load_tokenizer

    torch.set_num_threads(1)
    tokenizer = load_tokenizer("smollm2-135m-instruct")
    return tokenizer, [w.upper() for w in WORDS.read_text().split()]


def llguidance_engine(tokenizer, words):
    import llguidance
    import llguidance.hf
    import llguidance.torch
    import torch
    from llguidance import LLMatcher

    t0 = time.perf_counter()
    tokens = llguidance.hf.from_tokenizer(tokenizer, eos_token=[tokenizer.eos_token_id])
    t1 = time.perf_counter()
    grammar = LLMatcher.grammar_from_lark("start: WORD\nWORD: " + " | ".join(json.dumps(w) for w in words))
    template = LLMatcher(tokens, grammar)
    t2 = time.perf_counter()
    words_mask = torch.zeros(1, (tokens.vocab_size + 31) // 32, dtype=torch.int32)

    def fresh():
        return template.deep_copy()

    def mask(matcher):
        llguidance.torch.fill_next_token_bitmask(matcher, words_mask)
        return words_mask

    return t1 - t0, t2 - t1, fresh, mask, lambda matcher, token: matcher.consume_token(token)


def xgrammar_engine(tokenizer, words):
    import xgrammar as xgr

    t0 = time.perf_counter()
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=len(tokenizer),
                                              stop_token_ids=[tokenizer.eos_token_id])
    compiler = xgr.GrammarCompiler(info, max_threads=1)
    t1 = time.perf_counter()
    compiled = compiler.compile_grammar("root ::= " + " | ".join(json.dumps(w) for w in words))
    t2 = time.perf_counter()
    bitmask = xgr.allocate_token_bitmask(1, info.vocab_size)

    def mask(matcher):
        matcher.fill_next_token_bitmask(bitmask)
        return bitmask

    return t1 - t0, t2 - t1, lambda: xgr.GrammarMatcher(compiled), mask, \
        lambda matcher, token: matcher.accept_token(token)


def outlines_core_engine(tokenizer, words):
    import outlines_core
    import torch

    t0 = time.perf_counter()
    special = set(tokenizer.all_special_ids)
    by_text: dict[str, list[int]] = {}
    for token_id in range(len(tokenizer)):
        if token_id not in special:
            text = tokenizer.convert_tokens_to_string([tokenizer.convert_ids_to_tokens(token_id)])
            by_text.setdefault(text, []).append(token_id)
    vocabulary = outlines_core.Vocabulary(tokenizer.eos_token_id, by_text)
    t1 = time.perf_counter()
    index = outlines_core.Index("(" + "|".join(words) + ")", vocabulary)
    t2 = time.perf_counter()
    bitmask = torch.zeros(1, (len(tokenizer) + 31) // 32, dtype=torch.int32)

    def mask(guide):
        guide.write_mask_into(bitmask.data_ptr(), bitmask.numel(), 4)
        return bitmask

    return t1 - t0, t2 - t1, lambda: outlines_core.Guide(index), mask, lambda guide, token: guide.advance(token)


def run_engine(name: str, count: int) -> dict:
    tokenizer, words = load()
    before = rss_mb()
    tokenizer_s, compile_s, fresh, mask, accept = {"llguidance": llguidance_engine, "xgrammar": xgrammar_engine,
                                                   "outlines-core": outlines_core_engine}[name](tokenizer, words)
    first = fresh()
    t0 = time.perf_counter()
    allowed = mask(first)
    first_ms = (time.perf_counter() - t0) * 1e3
    allowed_0 = sum(bin(word & 0xFFFFFFFF).count("1") for word in allowed[0].tolist())
    rss = rss_mb() - before
    sample = random.Random(0).sample(words, count)
    cold, warm = spell(tokenizer, sample, fresh, mask, accept), spell(tokenizer, sample, fresh, mask, accept)
    return {"engine": name, "tokenizer_s": tokenizer_s, "compile_s": compile_s, "first_mask_ms": first_ms,
            "cold_us": statistics.mean(cold) * 1e6, "max_us": max(cold) * 1e6, "warm_us": statistics.mean(warm) * 1e6,
            "masks": len(cold), "rss_mb": rss, "allowed_0": allowed_0}


def spell(tokenizer, words: list[str], fresh, mask, accept) -> list[float]:
    """Seconds of each token mask while each word is written token by token, then its EOS (masked, not fed)."""
    times = []
    for word in words:
        matcher = fresh()
        for token in tokenizer(word, add_special_tokens=False)["input_ids"] + [None]:
            t0 = time.perf_counter()
            mask(matcher)
            times.append(time.perf_counter() - t0)
            if token is not None:
                accept(matcher, token)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--words", type=int, default=40, help="seeded words spelled token by token (mask timing)")
    parser.add_argument("--engine", help=argparse.SUPPRESS)  # the subprocess of one engine
    args = parser.parse_args()
    if args.engine:
        print(json.dumps(run_engine(args.engine, args.words)))
        return
    rows = []
    for name in args.engines.split(","):
        done = subprocess.run([sys.executable, __file__, "--engine", name, "--words", str(args.words)],
                              capture_output=True, text=True)
        if done.returncode:
            print(f"{name}: failed ({done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'no output'})")
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"{'engine':<14} {'tokenizer s':>11} {'compile s':>9} {'1st mask ms':>11} {'cold us':>8} {'max us':>8} "
          f"{'warm us':>8} {'RSS MB':>7} {'allowed@0':>9}")
    for r in rows:
        print(f"{r['engine']:<14} {r['tokenizer_s']:>11.2f} {r['compile_s']:>9.3f} {r['first_mask_ms']:>11.2f} "
              f"{r['cold_us']:>8.1f} {r['max_us']:>8.1f} {r['warm_us']:>8.1f} {r['rss_mb']:>7.1f} {r['allowed_0']:>9}")


if __name__ == "__main__":
    main()
