"""Vectorised Wordle feedback: many guesses against many secrets at once, as base-3 pattern codes.

A feedback pattern is encoded as ``sum_i v_i * 3**i`` over positions i = 0..4 with v = 0 (x, absent),
1 (-, elsewhere), 2 (✓, right spot), giving codes 0..242 (uint8); 242 means solved. The repeated-letter rule of
the real game becomes counting: a non-exact guess letter at position i is "elsewhere" exactly when the copies of
that letter in the secret, minus those matched exactly, minus those claimed by earlier non-exact positions of the
guess with the same letter, leave at least one spare. Each step is one elementwise operation over a
``[guesses, secrets]`` block, skipped when no guess in the block repeats the letter. This agrees with the simple
left-to-right reference in `rftune.envs.wordle.game.feedback` (the tests check it on random words).

On top of the codes: filtering of words consistent with earlier feedback, and the expected information (entropy
of the partition) a guess yields over a candidate set, used by the solver and the guess-value reward.
"""

from __future__ import annotations

import numpy as np

from rftune.envs.wordle.words import WORD_LENGTH, WordList, encode

NUM_PATTERNS = 3**WORD_LENGTH
SOLVED_CODE = NUM_PATTERNS - 1
_CHUNK_PAIRS = 2_000_000  # guess x secret pairs per block: bounds temporary memory to a few tens of MB


def pattern_codes(guesses: np.ndarray, secrets: np.ndarray) -> np.ndarray:
    """Feedback codes for every guess against every secret. ``[G, 5] x [S, 5] uint8 -> [G, S] uint8``."""
    block = max(1, _CHUNK_PAIRS // max(1, len(secrets)))
    parts = [_codes_block(guesses[i:i + block], secrets) for i in range(0, len(guesses), block)]
    return np.concatenate(parts) if parts else np.zeros((0, len(secrets)), dtype=np.uint8)


def _codes_block(guesses: np.ndarray, secrets: np.ndarray) -> np.ndarray:
    exact = [guesses[:, i, None] == secrets[None, :, i] for i in range(WORD_LENGTH)]  # 5 x [G, S]
    same = guesses[:, :, None] == guesses[:, None, :]  # [G, 5, 5] same[g, i, j]: letter i == letter j
    copies = _letter_counts(secrets).T  # [26, S]
    codes = np.zeros((len(guesses), len(secrets)), dtype=np.uint8)  # [G, S]
    for i in range(WORD_LENGTH):
        spare = copies[guesses[:, i]]  # [G, S] copies of guess letter i in the secret
        for j in range(WORD_LENGTH):
            spare = _minus_where(spare, exact[j], same[:, i, j])  # copies taken by exact matches
            if j < i:
                spare = _minus_where(spare, ~exact[j], same[:, i, j])  # copies taken by earlier letters
        elsewhere = ~exact[i] & (spare > 0)  # [G, S]
        codes += (2 * exact[i].view(np.uint8) + elsewhere.view(np.uint8)) * np.uint8(3**i)
    return codes


def _minus_where(spare: np.ndarray, taken: np.ndarray, applies: np.ndarray) -> np.ndarray:
    """``spare - (taken & applies[:, None])`` as int8, skipping the work when no guess row applies."""
    if not applies.any():
        return spare
    return spare - (taken & applies[:, None]).view(np.int8)  # [G, S]


def _letter_counts(words: np.ndarray) -> np.ndarray:
    """``[S, 5]`` letters -> ``[S, 26]`` int8 counts per letter."""
    counts = np.zeros((len(words), 26), dtype=np.int8)  # [S, 26]
    np.add.at(counts, (np.arange(len(words))[:, None], words), 1)
    return counts


def code_of(pattern: str) -> int:
    """Symbol pattern such as ``'x✓-xx'`` -> its base-3 code."""
    values = {"x": 0, "-": 1, "✓": 2}
    return sum(values[symbol] * 3**i for i, symbol in enumerate(pattern))


def symbols_of(code: int) -> str:
    """Base-3 code -> symbol pattern (inverse of `code_of`)."""
    symbols = "x-✓"
    return "".join(symbols[(int(code) // 3**i) % 3] for i in range(WORD_LENGTH))


def consistent_mask(words: WordList, history: list[tuple[str, str]]) -> np.ndarray:
    """``[N]`` bool: which words would have produced every (guess, pattern) in `history` as the secret."""
    mask = np.ones(len(words), dtype=bool)  # [N]
    for guess, pattern in history:
        codes = pattern_codes(encode([guess]), words.encoded)[0]  # [N]
        mask &= codes == code_of(pattern)
    return mask


def consistent_words(words: WordList, history: list[tuple[str, str]]) -> list[str]:
    """The words of `words` (in order) consistent with all feedback in `history`."""
    return [words[i] for i in np.flatnonzero(consistent_mask(words, history))]


def partition_sizes(codes: np.ndarray) -> np.ndarray:
    """``[G, S]`` pattern codes -> ``[G, 243]`` number of secrets per feedback pattern, per guess."""
    offsets = np.arange(codes.shape[0], dtype=np.int64)[:, None] * NUM_PATTERNS  # [G, 1]
    flat = np.bincount((codes + offsets).ravel(), minlength=codes.shape[0] * NUM_PATTERNS)  # [G*243]
    return flat.reshape(codes.shape[0], NUM_PATTERNS)  # [G, 243]


def expected_information(guesses: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Entropy in bits of the feedback each guess produces over equally likely candidates. ``[G, 5], [C, 5] -> [G]``.

    Equals ``log2|C| - sum_g |g|/|C| log2|g|`` over the partition of the candidates by feedback pattern.
    """
    total = len(candidates)
    if total == 0:
        return np.zeros(len(guesses))
    block = max(1, _CHUNK_PAIRS // total)
    parts = [_information_block(guesses[i:i + block], candidates) for i in range(0, len(guesses), block)]
    return np.concatenate(parts) if parts else np.zeros(0)


def _information_block(guesses: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    return information_from_sizes(partition_sizes(pattern_codes(guesses, candidates)))  # [G]


def information_from_sizes(sizes: np.ndarray) -> np.ndarray:
    """``[G, 243]`` group sizes -> ``[G]`` entropy in bits, ``log2 n - sum |g|/n log2 |g|`` with n = row total."""
    sizes = sizes.astype(np.float64)  # [G, 243]
    total = sizes.sum(axis=1)  # [G]
    weighted = (sizes * np.log2(np.maximum(sizes, 1.0))).sum(axis=1)  # [G], empty groups add 0
    return np.log2(np.maximum(total, 1.0)) - weighted / np.maximum(total, 1.0)  # [G]
