"""Structured generation: ``generation.constraint`` compiled once, a token mask at every decoding step, and the same
masks replayed for the trainer.

A constraint changes the policy. At each step the tokens its grammar forbids get probability zero and the others
are renormalised; that constrained distribution is what was sampled, so it is what the trainer scores (log-probs,
ratio, KL and entropy under the mask in force at each position). Masks depend only on the tokens before them, so
the trainer *recomputes* them (`Constraint.replay`) instead of carrying them from the sampler: one path for every
backend, vLLM's included.

Kinds (exactly one per constraint, `rftune.config.ConstraintConfig`):
    regex        the text matches the regular expression (Rust ``regex`` syntax)
    choices      one of the strings (``choices_file``: one per line, relative to the config's folder, or
                 ``rftune:PATH`` for a file shipped in the package; ``case`` rewrites them to upper or lower case)
    json_schema  a JSON value valid under the schema (a mapping, JSON text, or a ``.json`` file)
    grammar      a Lark grammar (llguidance's dialect; text or a ``.lark`` file)
    gbnf         a GBNF grammar (llama.cpp's; text or a ``.gbnf`` file), converted to Lark
``span: [open, close]`` applies the constraint only between the two tags (e.g. ``["<guess>", "</guess>"]``): text
outside them is free, and every opened tag must hold a match and be closed. Without a span the whole reply must
match, then end (EOS).

The engine is llguidance (MIT, no dependencies, CPU wheels; it is one of vLLM's and SGLang's guided-decoding
backends): every kind compiles to one Lark grammar, which is also what vLLM is given (`vllm_grammar`). A grammar
that does not parse, or whose first token the tokenizer cannot write (or a choice it cannot spell), is a
`ConfigError` at start. A completion that reaches a state where the grammar admits no token is a *dead end*: it
is ended there as truncated (EOS forced, the token masked out of the loss) and counted; decoding never waits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch

from rftune.errors import ConfigError

KINDS = ("regex", "choices", "choices_file", "json_schema", "grammar", "gbnf")
ERROR_LINES = 6  # lines of an engine error shown to the user (its messages echo the grammar)


@dataclass(frozen=True)
class Constraint:
    """A constraint compiled for one tokenizer: its Lark source, and a matcher to copy for each completion."""

    lark: str  # the whole constraint as one Lark grammar (what vLLM's guidance backend is given too)
    description: str  # e.g. "choices (12972 strings) inside <guess>...</guess>", for logs and reports
    matcher: Any  # llguidance.LLMatcher at the start of a completion; never advanced itself
    eos_ids: tuple[int, ...]
    words: int  # int32 words of one token mask: ceil(tokenizer vocabulary / 32)
    executor: Any  # llguidance.LLExecutor: fills the masks of a batch's rows on a thread pool
    never: tuple[int, ...] = ()  # tokens that write no text and are never allowed (the unknown token)

    def guide(self, rows: int) -> "Guide":
        """Fresh per-row state for one generation call of `rows` completions."""
        return Guide(self, rows)

    def replay(self, completion_ids: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
        """The masks in force when `completion_ids` [B, Tc] were sampled, as bit words [B, Tc, W] (`unpack_bits`).

        Every run of consecutive ``completion_mask`` tokens is one reply (a multi-turn row has several) and starts
        a fresh matcher; positions outside the runs allow everything (-1: all bits set).
        """
        words = torch.full((*completion_ids.shape, self.words), -1, dtype=torch.int32)  # [B, Tc, W]
        for row, (ids, mask) in enumerate(zip(completion_ids.tolist(), completion_mask.tolist())):
            matcher = None
            for column, (token, generated) in enumerate(zip(ids, mask)):
                if not generated:
                    matcher = None
                    continue
                matcher = matcher or self.matcher.deep_copy()
                _fill(self, [matcher], words[row, column:column + 1])
                if not matcher.consume_token(token):
                    raise ValueError(f"row {row}, position {column}: token {token} breaks the constraint "
                                     f"({self.description}); it was not sampled under it")
        return words.to(completion_ids.device)


class Guide:
    """The constraint's state for each completion of one generation call: masks logits, follows sampled tokens.

    Rows are numbered as the caller's output rows. ``dead_end_step[r]`` is the step at which row r found no
    allowed token (-1: never); that step's EOS was forced and is not the completion's.
    """

    def __init__(self, constraint: Constraint, rows: int):
        self.constraint = constraint
        self.matchers = [constraint.matcher.deep_copy() for _ in range(rows)]
        self.finished = [False] * rows  # an EOS was sampled or forced: later tokens of the row are padding
        self.dead_end_step = torch.full((rows,), -1, dtype=torch.long)  # [rows]

    def mask_logits(self, logits: torch.Tensor, rows: torch.Tensor, step: int) -> torch.Tensor:
        """logits [b, V] of output rows `rows` [b] at decoding `step` -> the same with forbidden tokens at -inf.

        A row whose grammar admits no token gets only its EOS (a dead end, recorded); finished rows are left as
        they are (their tokens are discarded)."""
        active = [(i, row) for i, row in enumerate(rows.tolist()) if not self.finished[row]]
        words = torch.full((logits.shape[0], self.constraint.words), -1, dtype=torch.int32)  # [b, W]
        _fill(self.constraint, [self.matchers[row] for _, row in active], words, [i for i, _ in active])
        allowed = unpack_bits(words, logits.shape[1])  # [b, V]
        for i, row in active:
            if not allowed[i].any():
                self.dead_end_step[row] = step
                allowed[i, self.constraint.eos_ids[0]] = True
        return logits.masked_fill(~allowed.to(logits.device), -torch.inf)

    def advance(self, rows: torch.Tensor, tokens: torch.Tensor) -> None:
        """Feed each row's sampled token [b] to its matcher (rows [b] as in `mask_logits`)."""
        for row, token in zip(rows.tolist(), tokens.tolist()):
            if self.finished[row]:
                continue
            if self.dead_end_step[row] >= 0 or token in self.constraint.eos_ids:
                self.finished[row] = True
                continue
            self.matchers[row].consume_token(token)

    @property
    def dead_ends(self) -> int:
        return int((self.dead_end_step >= 0).sum())


def _fill(constraint: Constraint, matchers: list, words: torch.Tensor, indices: list[int] | None = None) -> None:
    """Write each matcher's next-token mask into row ``indices[k]`` of the bit words [n, W]."""
    import llguidance.torch

    if not matchers:
        return
    indices = list(indices if indices is not None else range(len(matchers)))
    llguidance.torch.fill_next_token_bitmask_par(constraint.executor, list(zip(matchers, indices)), words)
    for token in constraint.never:
        bit = torch.tensor(1, dtype=torch.int32) << (token % 32)
        words[indices, token // 32] &= ~bit


def unpack_bits(words: torch.Tensor, vocab: int) -> torch.Tensor:
    """int32 bit words [..., W] (bit j of word w = token 32 w + j) -> allowed [..., vocab] bool (False past 32 W)."""
    shifts = torch.arange(32, dtype=torch.int32, device=words.device)
    bits = ((words[..., None] >> shifts) & 1).bool().flatten(-2)  # [..., 32 W]
    if bits.shape[-1] >= vocab:
        return bits[..., :vocab]
    return torch.cat([bits, bits.new_zeros(*bits.shape[:-1], vocab - bits.shape[-1])], dim=-1)


# ------------------------------------------------------------------------------------------------ compiling
class ConstraintCompiler:
    """Compiles constraints for one tokenizer and EOS set (building llguidance's view of the tokenizer takes about
    a second: a server or an evaluation keeps one compiler)."""

    def __init__(self, tokenizer, eos_ids: list[int]):
        import llguidance
        import llguidance.hf

        self.tokenizer, self.eos_ids = tokenizer, tuple(eos_ids)
        try:
            self.tokens = llguidance.hf.from_tokenizer(tokenizer, eos_token=list(eos_ids))
        except ValueError:  # a tokenizer whose decoder llguidance does not read: from each token's own text
            self.tokens = llguidance.LLTokenizer(llguidance.TokenizerWrapper(_TokenTexts(tokenizer)),
                                                 eos_token=list(eos_ids))
        self.executor = llguidance.LLExecutor()

    def compile(self, spec, base_dir: str = ".") -> Constraint:
        """A `ConstraintConfig` -> a `Constraint`; ConfigError when it does not parse or the tokenizer cannot
        write it (see the module docstring)."""
        lark, description = constraint_lark(spec, base_dir)
        matcher = _matcher(self.tokens, lark, description)
        unknown = self.tokenizer.unk_token_id
        constraint = Constraint(lark=lark, description=description, matcher=matcher, eos_ids=self.eos_ids,
                                words=(self.tokens.vocab_size + 31) // 32, executor=self.executor,
                                never=(unknown,) if unknown is not None and unknown not in self.eos_ids else ())
        words = torch.zeros(1, constraint.words, dtype=torch.int32)
        _fill(constraint, [matcher], words)
        if not words.any():
            raise ConfigError(f"generation.constraint ({description}): the tokenizer cannot write any text it "
                              "allows")
        if spec.choices is not None or spec.choices_file is not None:
            _check_spellable(_choices(spec, base_dir), self.tokenizer, description)
        return constraint


class _TokenTexts:
    """A tokenizer as llguidance's generic wrapper reads it: every token's bytes (its decoded text, special tokens
    marked) and an encoder."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.eos_token_id, self.bos_token_id = tokenizer.eos_token_id, tokenizer.bos_token_id
        self.special_token_ids = sorted(set(tokenizer.all_special_ids))
        self.tokens = [tokenizer.decode([i]).encode() for i in range(len(tokenizer))]

    def __call__(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]


def compile_constraint(spec, tokenizer, eos_ids: list[int], base_dir: str = ".") -> Constraint | None:
    """``generation.constraint`` (a `ConstraintConfig`, or None) -> a `Constraint` for `tokenizer`, or None."""
    return None if spec is None else ConstraintCompiler(tokenizer, eos_ids).compile(spec, base_dir)


def check_constraint(spec, base_dir: str = ".") -> None:
    """Parse the constraint without a tokenizer (at config load): a ConfigError if it cannot be compiled."""
    from llguidance import LLMatcher

    lark, description = constraint_lark(spec, base_dir)
    error = LLMatcher.validate_grammar(LLMatcher.grammar_from_lark(lark))
    if error:
        raise ConfigError(f"generation.constraint ({description}): {_short(error)}")


def constraint_lark(spec, base_dir: str = ".") -> tuple[str, str]:
    """(the constraint as one Lark grammar, a short description); ConfigError for a spec that is not one kind."""
    kinds = [kind for kind in KINDS if getattr(spec, kind) is not None]
    if len(kinds) != 1:
        raise ConfigError(f"generation.constraint: set exactly one of {', '.join(KINDS)} (got "
                          f"{', '.join(kinds) or 'none'})")
    kind = kinds[0]
    if spec.case != "keep" and kind not in ("choices", "choices_file"):
        raise ConfigError("generation.constraint.case applies to choices and choices_file only")
    inner, description = _INNER[kind](spec, base_dir)
    if spec.span is None:
        return f"start: {inner}\n", description
    if len(spec.span) != 2 or not all(isinstance(tag, str) and tag for tag in spec.span):
        raise ConfigError(f"generation.constraint.span: two non-empty strings [open, close], got {spec.span!r}")
    opening, closing = (json.dumps(tag) for tag in spec.span)
    # Free text up to the first opening tag (lazy: it ends there), the constrained text, the closing tag; any
    # number of such spans; then free text that never opens the tag again.
    lark = (f"start: span* TAIL\nspan: head inner {closing}\nhead[lazy]: /(?s:.*)/ {opening}\ninner: {inner}\n"
            f"TAIL: /(?s:.*)/ & ~/(?s:.*){_regex_literal(spec.span[0])}(?s:.*)/\n")
    return lark, f"{description} inside {spec.span[0]}...{spec.span[1]}"


def vllm_grammar(constraint: Constraint) -> str:
    """The grammar to give vLLM's guided decoding (its ``guidance`` backend, i.e. llguidance, takes Lark)."""
    return constraint.lark


def _regex_kind(spec, base_dir: str) -> tuple[str, str]:
    return f"/{_escape_slashes(spec.regex)}/", f"regex {spec.regex!r}"


def _choices_kind(spec, base_dir: str) -> tuple[str, str]:
    choices = _choices(spec, base_dir)
    source = f"file {spec.choices_file}, " if spec.choices_file is not None else ""
    # One terminal (a single lexeme), not one grammar rule per choice: an Earley row per choice is far slower.
    return "CHOICE\nCHOICE: " + " | ".join(json.dumps(c) for c in choices), \
        f"choices ({source}{len(choices)} strings)"


def _json_kind(spec, base_dir: str) -> tuple[str, str]:
    schema = spec.json_schema
    if isinstance(schema, str):
        schema = _json_text(_text_or_file(schema, base_dir, ".json"), "json_schema")
    return f"%json {json.dumps(schema)}", "JSON schema"


def _grammar_kind(spec, base_dir: str) -> tuple[str, str]:
    return _sub_grammar(_text_or_file(spec.grammar, base_dir, ".lark")), "Lark grammar"


def _gbnf_kind(spec, base_dir: str) -> tuple[str, str]:
    from llguidance.gbnf_to_lark import any_to_lark

    try:
        lark = any_to_lark(_text_or_file(spec.gbnf, base_dir, ".gbnf"))
    except Exception as exc:  # the converter raises plain exceptions for syntax errors
        raise ConfigError(f"generation.constraint.gbnf: cannot parse the grammar: {_short(str(exc))}") from None
    return _sub_grammar(lark), "GBNF grammar"


_INNER = {"regex": _regex_kind, "choices": _choices_kind, "choices_file": _choices_kind, "json_schema": _json_kind,
          "grammar": _grammar_kind, "gbnf": _gbnf_kind}


def _sub_grammar(lark: str) -> str:
    """A user's Lark grammar (rules named freely, ``start`` first) as a rule of ours: its rules get a prefix."""
    import re

    names = set(re.findall(r"^\s*([A-Za-z_][\w-]*)\s*(?:\[[^\]]*\])?\s*:", lark, flags=re.M))
    if "start" not in names:
        raise ConfigError("generation.constraint: the grammar needs a `start` rule")
    pattern = re.compile(r'"(?:\\.|[^"\\])*"|/(?:\\.|[^/\\])*/|\b(' + "|".join(map(re.escape, names)) + r")\b")
    renamed = pattern.sub(lambda m: m.group(0) if m.group(1) is None else _prefixed(m.group(1)), lark)
    return f"{_prefixed('start')}\n{renamed}"


def _prefixed(name: str) -> str:
    return ("USER_" if name.isupper() else "user_") + name


def _choices(spec, base_dir: str) -> list[str]:
    if spec.choices_file is not None:
        path = _path(spec.choices_file, base_dir)
        choices = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    else:
        choices = list(spec.choices)
    if not choices or not all(isinstance(c, str) and c for c in choices):
        raise ConfigError("generation.constraint: choices must be a non-empty list of non-empty strings")
    cased = {"keep": choices, "upper": [c.upper() for c in choices], "lower": [c.lower() for c in choices]}
    return list(dict.fromkeys(cased[spec.case]))


def _check_spellable(choices: list[str], tokenizer, description: str) -> None:
    for choice in choices:
        ids = tokenizer(choice, add_special_tokens=False)["input_ids"]
        if tokenizer.decode(ids) != choice:
            raise ConfigError(f"generation.constraint ({description}): the tokenizer cannot write the choice "
                              f"{choice!r} (it reads back as {tokenizer.decode(ids)!r})")


def _text_or_file(value: str, base_dir: str, suffix: str) -> str:
    """A value that names an existing ``*suffix`` file (relative: from the config's folder) is read; else it is
    the text itself."""
    if value.strip().endswith(suffix) and "\n" not in value.strip():
        return _path(value.strip(), base_dir).read_text()
    return value


PACKAGE_PREFIX = "rftune:"  # ``rftune:data/wordle/allowed.txt``: a file shipped inside the package


def _path(name: str, base_dir: str) -> Path:
    if name.startswith(PACKAGE_PREFIX):
        path = Path(str(files("rftune").joinpath(name.removeprefix(PACKAGE_PREFIX))))
    else:
        path = Path(name) if Path(name).is_absolute() else Path(base_dir) / name
    if not path.is_file():
        raise ConfigError(f"generation.constraint: file not found: {path}")
    return path


def _json_text(text: str, key: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"generation.constraint.{key}: not valid JSON: {exc}") from None


def _escape_slashes(regex: str) -> str:
    return regex.replace("/", "\\/")


def _regex_literal(text: str) -> str:
    import re

    return _escape_slashes(re.escape(text))


def _matcher(tokens, lark: str, description: str):
    from llguidance import LLMatcher

    grammar = LLMatcher.grammar_from_lark(lark)
    error = LLMatcher.validate_grammar(grammar, tokens)
    matcher = None if error else LLMatcher(tokens, grammar)
    if error or matcher.is_error():
        raise ConfigError(f"generation.constraint ({description}): {_short(error or matcher.get_error())}")
    return matcher


def _short(error: str) -> str:
    lines = [line for line in error.strip().splitlines() if line.strip()]
    text = "\n".join(lines[:ERROR_LINES])
    return text if len(text) < 600 else text[:600] + " ..."
