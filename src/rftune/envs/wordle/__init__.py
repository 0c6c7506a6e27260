"""Wordle: pure game logic, reference players, prompts, the multi-turn environment, rewards and data generators.

Modules, bottom up: `words` (word lists), `game` (feedback rules, text forms, one game's state), `patterns`
(vectorised feedback, candidate filtering, expected information), `prompts`, `players` and `solver`,
`env` (the `Env` implementation), `rewards` (registered built-ins), `evaluate` (playing whole games),
`datasets` (history-mode rows and SFT traces) and `render` (terminal board and human play).
Importing this package does not load the word lists; they are read on first use.
"""

from rftune.envs.wordle.datasets import history_rows, sft_traces, write_jsonl
from rftune.envs.wordle.env import WordleEnv
from rftune.envs.wordle.evaluate import (
                                         GameRecord,
                                         evaluate_players,
                                         format_table,
                                         play_game,
                                         seeded_secrets,
                                         summarize_games,
)
from rftune.envs.wordle.game import WordleGame, feedback, parse_feedback, parse_history, render_feedback
from rftune.envs.wordle.players import ModelPlayer, Move, OpeningPlayer, Player, RandomPlayer
from rftune.envs.wordle.prompts import SYSTEM_PROMPT, wordle_messages
from rftune.envs.wordle.render import play_human, render_board
from rftune.envs.wordle.solver import InfoGainSolver

__all__ = [
    "GameRecord", "InfoGainSolver", "ModelPlayer", "Move", "OpeningPlayer", "Player", "RandomPlayer",
    "SYSTEM_PROMPT", "WordleEnv", "WordleGame", "evaluate_players", "feedback", "format_table", "history_rows",
    "parse_feedback", "parse_history", "play_game", "play_human", "render_board", "render_feedback",
    "seeded_secrets", "sft_traces", "summarize_games", "wordle_messages", "write_jsonl",
]
