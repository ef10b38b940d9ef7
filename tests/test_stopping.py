"""The GAN stopping rule (docs/method.md section 6): each branch by hand, and the hard cap."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from isl_cli.engine.stopping import StopDecision, decide, paper_rule

GOOD = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05]  # 10 epochs, all below 1, still improving


def test_round0_never_stops_before_ten_epochs():
    losses = [0.5, 0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6]  # best is old, but only 9 epochs
    decision = paper_rule(losses, 0)
    assert not decision.stop and "at least 10" in decision.reason
    assert paper_rule(losses + [0.65], 0).stop  # the 10th epoch may stop
    assert paper_rule(losses, 1).stop  # later rounds have no minimum


def test_keeps_going_while_the_best_loss_is_above_one():
    losses = [3.0, 1.5, 1.2, 1.3, 1.4, 1.6, 1.7, 1.8, 1.9, 2.0, 2.1]
    for round_index in (0, 2):
        decision = paper_rule(losses, round_index)
        assert not decision.stop and "best loss 1.2" in decision.reason and "above 1" in decision.reason
    assert paper_rule(losses[:3] + [1.0] + losses[3:], 1).stop  # exactly 1.0 is not above 1.0


def test_round0_keeps_going_while_the_last_loss_is_above_one():
    losses = GOOD[:9] + [0.2, 0.3, 1.5]
    decision = paper_rule(losses, 0)
    assert not decision.stop and "last loss 1.5" in decision.reason
    assert paper_rule(losses, 1).stop  # only round 0 has this condition


def test_keeps_going_while_the_last_epoch_is_the_best_of_the_last_three():
    losses = [0.5, 0.9, 0.8, 0.7]  # best (0.5) is old, but the last improves on the two before
    decision = paper_rule(losses, 1)
    assert not decision.stop and "best of the last 3" in decision.reason
    assert not paper_rule([0.5, 0.9, 0.7, 0.7], 1).stop  # a tie with the best of the three counts as best


def test_stops_when_the_best_loss_is_older_than_the_last_three_epochs():
    losses = [0.6, 0.5, 0.7, 0.6, 0.65]
    decision = paper_rule(losses, 1)
    assert decision == StopDecision(True, decision.reason)
    assert decision.reason.startswith("best loss 0.5 at epoch 2 is older than the last three epochs")


def test_keeps_going_when_the_best_is_recent_but_not_last():
    losses = [0.9, 0.8, 0.5, 0.6]  # best at epoch 3, inside the last three, last is not the best of three
    decision = paper_rule(losses, 1)
    assert not decision.stop and "within the last 3" in decision.reason
    assert paper_rule(losses + [0.55], 1).stop is False  # best still at epoch 3 = within the last three
    assert paper_rule(losses + [0.55, 0.56], 1).stop  # now epoch 3 is older than the last three


def test_decide_fixed_epochs_stops_exactly_then():
    losses = [5.0] * 7
    assert not decide(losses[:6], 0, fixed_epochs=7).stop
    decision = decide(losses, 0, fixed_epochs=7)
    assert decision.stop and "fixed number of epochs" in decision.reason
    assert not decide([0.6, 0.5, 0.7, 0.6, 0.65], 1, fixed_epochs=7).stop  # the paper rule is off


def test_decide_hard_cap_wins_and_says_so():
    losses = [2.0] * 5  # the paper rule would keep going forever
    assert not decide(losses[:4], 1, max_epochs=5).stop
    decision = decide(losses, 1, max_epochs=5)
    assert decision.stop and "hard cap of 5 epochs" in decision.reason and "above 1" in decision.reason
    capped = decide(losses, 1, max_epochs=5, fixed_epochs=9)
    assert capped.stop and "hard cap" in capped.reason


def test_decide_uses_the_paper_rule_and_its_reason():
    decision = decide([0.6, 0.5, 0.7, 0.6, 0.65], 1)
    assert decision == paper_rule([0.6, 0.5, 0.7, 0.6, 0.65], 1)


def test_decide_stops_on_a_non_finite_loss():
    decision = decide([0.9, math.nan], 0)
    assert decision.stop and "nan at epoch 2" in decision.reason
    assert decide([0.9, math.inf, 0.3], 1).stop


@pytest.mark.parametrize(
    "kwargs", [{"max_epochs": 0}, {"fixed_epochs": 0}, {"round_index": -1}, {"max_epochs": True}]
)
def test_decide_validates(kwargs):
    arguments = {"losses": [1.0], "round_index": 0, **kwargs}
    with pytest.raises(ValueError):
        decide(**arguments)


@settings(max_examples=60, deadline=None)
@given(
    losses=st.lists(st.floats(0.0, 5.0), min_size=1, max_size=40),
    round_index=st.integers(0, 3),
    max_epochs=st.integers(1, 40),
    fixed_epochs=st.one_of(st.none(), st.integers(1, 60)),
)
def test_decide_always_stops_by_max_epochs(losses, round_index, max_epochs, fixed_epochs):
    # Feed the epochs one by one as the training loop does: it must stop at max_epochs at the latest.
    stopped_at = None
    for epoch in range(1, max_epochs + 1):
        history = (losses * (max_epochs // len(losses) + 1))[:epoch]
        decision = decide(history, round_index, max_epochs=max_epochs, fixed_epochs=fixed_epochs)
        assert decision.reason
        if decision.stop:
            stopped_at = epoch
            break
    assert stopped_at is not None and stopped_at <= max_epochs
    if fixed_epochs is not None:
        assert stopped_at == min(fixed_epochs, max_epochs)


def test_a_later_epoch_equal_to_the_best_keeps_training_as_the_reference():
    # the reference stops on `min_loss not in losses[-3:]`: a value test, so a tie inside the last three
    # epochs keeps going even though the best value was first reached long before
    losses = [0.5, 0.9, 0.8, 0.5, 0.7]
    decision = paper_rule(losses, 1)
    assert not decision.stop and "best loss 0.5 at epoch 4 is within the last 3" in decision.reason
    assert paper_rule(losses + [0.6], 1).stop is False  # 0.5 (epoch 4) is still among the last three
    stopped = paper_rule(losses + [0.6, 0.65], 1)
    assert stopped.stop and stopped.reason.startswith("best loss 0.5 at epoch 4 is older than the last three")


def test_round0_floor_in_steps_keeps_the_rule_going_longer_and_only_in_round_0():
    losses = [0.5, 0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65]  # the paper's rule stops after epoch 10
    assert decide(losses, 0).stop
    decision = decide(losses, 0, min_round0_epochs=25)  # e.g. --min-steps 1000 with 40 batches an epoch
    assert not decision.stop and "at least 25 epochs" in decision.reason
    assert decide(losses * 3, 0, min_round0_epochs=25).stop  # past the floor the rule decides again
    assert decide(losses, 1, min_round0_epochs=25).stop  # later rounds have no floor, as in the reference
    assert decide(losses, 0, min_round0_epochs=3).stop  # never below the reference's 10 epochs
    assert decide(losses[:6], 0, min_round0_epochs=25, max_epochs=6).stop  # the hard cap still wins
