"""The Wordle prompt, course style: a system message with rules and format, and a user turn with the history.

The system message explains the game, the three feedback symbols, the repeated-letter rule, walks through a short
example game, and asks for reasoning inside ``<think> … </think>`` followed by the guess as ``<guess>WORD</guess>``.
The user turn asks for a new guess and lists every earlier guess with its feedback, one line each:
``Guess 2: CRANE → Feedback: C(x) R(✓) A(-) N(x) E(x)``. Because each user turn restates the whole history, a
single-turn prompt (history mode) and a later turn of a multi-turn conversation carry the same information.

Two prompt styles (``PROMPT_STYLES``, the task option ``prompt_style``):

- ``course``: the history lines only, as in the course;
- ``summary``: the history lines, then what they establish letter by letter (`known_letters`): the placed letters
  as a spaced pattern (``_ R _ _ E``, one token per tile), the letters in the word but not yet placed with the
  positions they are not in, and the letters not in the word. The facts are exactly what the feedback says, so
  the model reads them instead of deriving them, a small model's weakest step.
"""

from __future__ import annotations

from rftune.envs.wordle.game import MAX_GUESSES, History, letter_facts, render_feedback

PROMPT_STYLES = ("course", "summary")
_ORDINALS = ("1st", "2nd", "3rd", "4th", "5th")

SYSTEM_PROMPT = f"""You are playing Wordle. Find the secret 5-letter English word in at most {MAX_GUESSES} guesses.

Rules:
- Every guess must be a real 5-letter English word from the Wordle word list.
- After each guess, every letter of it gets a mark:
  ✓ : the letter is in the secret word, in exactly this position.
  - : the letter is in the secret word, but in a different position.
  x : the letter is not in the secret word.
- Repeated letters: exact matches are marked ✓ first; other copies of a letter are marked - only while the \
secret still has unmatched copies of it, otherwise x.

Example game (secret word: BRICK)
Guess 1: TRAIN → Feedback: T(x) R(✓) A(x) I(-) N(x)
  R is the 2nd letter, I is in the word but not 4th, and T, A, N do not appear.
Guess 2: PRICE → Feedback: P(x) R(✓) I(✓) C(✓) E(x)
  R, I, C are placed (_RIC_); with T, A, N, P, E ruled out, BRICK fits.
Guess 3: BRICK → Feedback: B(✓) R(✓) I(✓) C(✓) K(✓)
  Solved in 3 guesses.

How to answer:
First reason step by step inside <think> </think>: what the feedback rules out and which words still fit.
Then give only your guess inside <guess> </guess>. For example:
<think>
The first guess should test common letters.
</think>
<guess>CRANE</guess>"""


def feedback_lines(history: History) -> list[str]:
    """One ``Guess N: WORD → Feedback: ...`` line per (guess, pattern) in the history."""
    return [f"Guess {n}: {guess.upper()} → Feedback: {render_feedback(guess, pattern)}"
            for n, (guess, pattern) in enumerate(history, start=1)]


def known_letters(history: History) -> list[str]:
    """What the feedback establishes, one line per kind of fact (none for an empty history)::

        Placed letters: _ R _ _ E
        In the word, not placed yet: A (not 3rd), L (not 1st or 4th)
        Not in the word: C N S T
    """
    if not history:
        return []
    placed, elsewhere, absent = letter_facts(history)
    lines = ["Placed letters: " + " ".join(letter.upper() if letter else "_" for letter in placed)]
    if elsewhere:
        lines.append("In the word, not placed yet: " + ", ".join(
            f"{letter.upper()} (not {ordinal_positions(spots)})" for letter, spots in elsewhere.items()))
    if absent:
        lines.append("Not in the word: " + " ".join(letter.upper() for letter in absent))
    return lines


def prompt_style_option(options: dict) -> str:
    """``task.kwargs.prompt_style`` of a Wordle config (``course`` when not set); another value is a `ConfigError`."""
    from rftune.errors import ConfigError

    style = options.get("prompt_style", "course")
    if style not in PROMPT_STYLES:
        raise ConfigError(f"task.kwargs.prompt_style: must be one of {', '.join(PROMPT_STYLES)}, got {style!r}")
    return style


def ordinal_positions(spots: set[int]) -> str:
    """``{0}`` -> ``1st``; ``{0, 3}`` -> ``1st or 4th``."""
    names = [_ORDINALS[i] for i in sorted(spots)]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def user_turn(history: History, notice: str | None = None, style: str = "course") -> str:
    """The user message asking for the next guess; `notice` (e.g. why the last reply was invalid) comes first.

    ``style``: ``course`` (history lines) or ``summary`` (history lines, then `known_letters`).
    """
    if style not in PROMPT_STYLES:
        raise ValueError(f"prompt style must be one of {', '.join(PROMPT_STYLES)}; got {style!r}")
    parts = [notice] if notice else []
    if history:
        parts.append("Make a new 5-letter word guess.\n\nHere is the feedback on your previous guesses:\n"
                     + "\n".join(feedback_lines(history)))
        if style == "summary":
            parts.append("What you know so far:\n" + "\n".join(known_letters(history)))
    else:
        parts.append("Make your first 5-letter word guess.")
    return "\n\n".join(parts)


def wordle_messages(history: History, notice: str | None = None, style: str = "course") -> list[dict]:
    """The chat prompt for the next guess: system message, then the user turn (in prompt `style`)."""
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": user_turn(history, notice, style)}]


def invalid_guess_notice(error: str, guesses_left: int) -> str:
    """What the player is told after an invalid reply, which used up one of its guesses."""
    left = f"{guesses_left} guess{'es' if guesses_left != 1 else ''} left"
    return f"Your last reply was not a valid guess ({error}). It still used up a turn; you have {left}."
