"""The threshold state machine (pure)."""
from controlplane.health.state import TargetState, advance


def run(state, results, up=2, down=3):
    changes = []
    for ok in results:
        step = advance(state, ok, healthy_threshold=up, unhealthy_threshold=down)
        state = step.state
        changes.append(step.changed)
    return state, changes


def test_it_marks_a_healthy_target_down_only_after_the_unhealthy_threshold():
    state, changes = run(TargetState(True), [False, False, False])
    assert changes == [False, False, True]
    assert not state.healthy and state.consecutive_fail == 3


def test_it_resets_the_failure_streak_on_one_success():
    state, changes = run(TargetState(True), [False, False, True, False, False])
    assert not any(changes) and state.healthy and state.consecutive_fail == 2


def test_it_brings_a_target_back_only_after_the_healthy_threshold():
    state, changes = run(TargetState(False), [True, False, True, True])
    assert changes == [False, False, False, True] and state.healthy


def test_it_flips_on_the_first_result_with_thresholds_of_one():
    state, changes = run(TargetState(True), [False, True, False], up=1, down=1)
    assert changes == [True, True, True] and not state.healthy


def test_it_caps_the_counters():
    state = TargetState(True, consecutive_ok=1000)
    assert advance(state, True, healthy_threshold=2, unhealthy_threshold=3).state.consecutive_ok == 1000


def test_it_continues_from_stored_counters():
    # Another worker stored two failures: the third one here decides.
    step = advance(TargetState(True, 0, 2), False, healthy_threshold=2, unhealthy_threshold=3)
    assert step.changed and not step.state.healthy
