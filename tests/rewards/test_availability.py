"""Unavailable rewards: the reasons, and each rewards.on_unavailable policy over a run of steps."""

import pytest

from rftune.errors import RewardError
from rftune.rewards.availability import UnavailableSteps, unavailable_reasons


def test_reasons_name_the_function_with_no_value_and_a_mostly_failing_judge():
    assert unavailable_reasons(["a", "b"], [3, 0], 8, judgments=0, failed_judgments=0) == [
        "reward function 'b' had no value for any of the 8 completions"]
    assert unavailable_reasons(["a"], [8], 8, judgments=8, failed_judgments=4) == []  # half is not most
    assert unavailable_reasons(["a"], [8], 8, judgments=8, failed_judgments=5) == [
        "5 of 8 judgments failed or could not be read"]


def test_stop_skips_updates_then_stops_at_the_limit_and_a_good_step_resets_the_count(capsys):
    steps = UnavailableSteps("stop", limit=2)
    assert steps.skip_update(["x"]) is True
    steps.announce(1, ["x"])
    assert steps.skip_update([]) is False  # an available step: the count starts again
    assert steps.skip_update(["x"]) is True
    steps.announce(3, ["x"])
    assert capsys.readouterr().err.count("its update skipped (rewards.on_unavailable=stop)") == 2
    assert steps.skip_update(["x"]) is True
    with pytest.raises(RewardError, match=r"step 4: rewards unavailable for 2 steps in a row \(x\); stopping"):
        steps.announce(4, ["x"])


@pytest.mark.parametrize("policy, skipped, said", [("skip_step", True, "its update skipped"),
                                                   ("continue", False, "trained on anyway")])
def test_skip_step_and_continue_never_stop(capsys, policy, skipped, said):
    steps = UnavailableSteps(policy, limit=1)
    for step in range(1, 5):
        assert steps.skip_update(["x"]) is skipped
        steps.announce(step, ["x"], speak=step == 1)
    said = f"warning: step 1: rewards unavailable: x; {said} (rewards.on_unavailable={policy})\n"
    assert capsys.readouterr().err == said
