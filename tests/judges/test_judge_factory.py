"""make_judge specs, the SQLite cache, the counters, and the local judge on the tiny model."""

import threading

import pytest

from rftune.errors import ConfigError
from rftune.judges import clear_judges, make_judge, resolve_judge
from rftune.judges.base import JudgeStats, complete_concurrently
from rftune.judges.cache import CachedJudge, JudgeCache, cache_key
from rftune.judges.local_judge import LocalJudge
from rftune.judges.openai_judge import OpenAIJudge
from rftune.rewards.judge import judge_score

SERVER = {"backend": "openai", "model": "m", "base_url": "http://127.0.0.1:9/v1", "api_key_env": None}


@pytest.fixture(autouse=True)
def fresh():
    clear_judges()
    yield
    clear_judges()


def test_make_judge_is_memoised_per_spec():
    first = make_judge(SERVER)
    assert make_judge(dict(reversed(list(SERVER.items())))) is first
    assert make_judge({**SERVER, "timeout": 5}) is not first
    assert isinstance(first, OpenAIJudge) and resolve_judge(SERVER) is first and resolve_judge(first) is first


@pytest.mark.parametrize("spec, message", [
    ({"backend": "anthropic"}, "backend must be one of"),
    ({**SERVER, "modle": "x"}, "Did you mean 'model'"),
    ({**SERVER, "timeout": "fast"}, "'timeout' must be int or float"),
    ({**SERVER, "concurrency": True}, "'concurrency' must be int"),
    ({**SERVER, "concurrency": 0}, "concurrency must be >= 1"),
    ({**SERVER, "timeout": 0}, "timeout must be > 0"),
    ({"backend": "openai"}, "needs a 'model'"),
    ({"backend": "local", "base_url": "http://x"}, "unknown judge setting 'base_url' for backend 'local'"),
])
def test_bad_specs_are_config_errors(spec, message):
    with pytest.raises(ConfigError, match=message):
        make_judge(spec)


def test_resolve_judge_rejects_other_objects():
    with pytest.raises(ConfigError, match="judge must be"):
        resolve_judge("gpt-4o")


def test_cache_path_wraps_the_judge_and_shares_the_file(tmp_path):
    path = str(tmp_path / "sub" / "judge.sqlite")
    judge = make_judge({**SERVER, "cache_path": path})
    assert isinstance(judge, CachedJudge) and judge.cache.path == path
    assert make_judge({**SERVER, "cache_path": path, "timeout": 3}).cache is judge.cache


def test_cache_round_trip_and_threads(tmp_path):
    cache = JudgeCache(tmp_path / "c.sqlite")
    keys = [cache_key("reply", "id", [{"role": "user", "content": str(i)}]) for i in range(50)]
    threads = [threading.Thread(target=lambda k=k, i=i: cache.put(k, f"v{i}")) for i, k in enumerate(keys)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(cache) == 50 and cache.get(keys[7]) == "v7" and cache.get("missing") is None
    assert JudgeCache(tmp_path / "c.sqlite").get(keys[49]) == "v49"
    assert cache_key("reply", "a", [1]) != cache_key("reply", "b", [1])


def test_unusable_cache_path_is_a_config_error(tmp_path):
    (tmp_path / "dir.sqlite").mkdir()
    with pytest.raises(ConfigError, match="cache_path"):
        JudgeCache(tmp_path / "dir.sqlite")


def test_stats_snapshot_and_reset():
    stats = JudgeStats()
    stats.add("judge/calls", 3)
    stats.add("judge/failures")
    assert stats.snapshot_and_reset() == {"judge/calls": 3, "judge/retries": 0, "judge/failures": 1,
                                          "judge/cache_hits": 0, "judge/parse_failures": 0}
    assert stats.snapshot()["judge/calls"] == 0
    with pytest.raises(KeyError):
        stats.add("judge/typo")


def test_complete_concurrently_keeps_order():
    assert complete_concurrently(lambda m: m[0]["content"] * 2, [[{"content": c}] for c in "abcde"], 3) == \
        ["aa", "bb", "cc", "dd", "ee"]
    assert complete_concurrently(lambda m: "x", [], 4) == []


def test_local_judge_on_the_tiny_model_end_to_end(tiny_model_dir, tmp_path):
    spec = {"backend": "local", "model": tiny_model_dir, "max_tokens": 6, "batch_size": 2,
            "cache_path": str(tmp_path / "judge.sqlite")}
    judge = make_judge(spec)
    assert isinstance(judge.judge, LocalJudge)
    batch = [[{"role": "user", "content": f"grade {i}"}] for i in range(3)]
    replies = judge.complete_many(batch)
    assert all(isinstance(reply, str) for reply in replies)
    assert judge.complete_many(batch) == replies  # greedy, and now cached
    assert judge.stats.snapshot()["judge/calls"] == 3 and judge.stats.snapshot()["judge/cache_hits"] == 3
    scores = judge_score(["p"], ["c"], judge=spec)
    assert scores == [None] or 0 <= scores[0] <= 1


def test_local_judge_gives_none_for_a_prompt_over_its_context(tiny_model_dir):
    judge = LocalJudge(tiny_model_dir, max_tokens=8)
    assert judge.complete([{"role": "user", "content": "x" * 2000}]) is None
    assert judge.stats.snapshot()["judge/failures"] == 1
