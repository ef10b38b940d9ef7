"""When to end the GAN stage (docs/method.md section 6).

`paper_rule` is the reference's rule over the per-epoch mean generator
losses. It can run forever, so `decide` adds what the reference lacked: a
hard cap, an optional fixed number of epochs, a stop on a non-finite loss,
and a reason line for the log saying which rule ended the stage. Epochs are
numbered from 1 in the reasons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

#: The reference's loss threshold.
LOSS_THRESHOLD = 1.0
#: In round 0 the GAN trains at least this many epochs.
MIN_EPOCHS_ROUND0 = 10
#: "The last three epochs" (the reason lines spell it out).
WINDOW = 3


@dataclass(frozen=True)
class StopDecision:
    """Whether to stop after the latest epoch, and a human log line saying why."""

    stop: bool
    reason: str


def paper_rule(losses: Sequence[float], round_index: int, min_round0_epochs: int = MIN_EPOCHS_ROUND0) -> StopDecision:
    """The reference's rule, applied after each epoch (checks in this order):

    1. round 0 and fewer than 10 epochs (`min_round0_epochs`, never fewer than 10): keep going;
    2. the smallest loss so far is above 1.0: keep going;
    3. round 0 and the last loss is above 1.0: keep going;
    4. the last epoch is the best of the last three: keep going;
    5. the best loss value so far is not among the last three losses: stop
       (the reference's `min_loss not in losses[-3:]`, by value: a later epoch
       that ties the best keeps training going);
    6. otherwise keep going.

    Args:
        losses: per-epoch mean generator losses, oldest first.
        round_index: the round (0-based).
    """
    values = [float(x) for x in losses]
    count = len(values)
    if count == 0:
        return StopDecision(False, "no epoch finished yet")
    last = values[-1]
    best = min(values)
    best_epoch = count - values[::-1].index(best)  # the latest epoch with the best value
    floor = max(MIN_EPOCHS_ROUND0, min_round0_epochs)
    if round_index == 0 and count < floor:
        return StopDecision(False, f"round 0 trains at least {floor} epochs ({count} done)")
    if best > LOSS_THRESHOLD:
        return StopDecision(False, f"best loss {best:.4g} is still above {LOSS_THRESHOLD:g}")
    if round_index == 0 and last > LOSS_THRESHOLD:
        return StopDecision(False, f"round 0: last loss {last:.4g} is still above {LOSS_THRESHOLD:g}")
    recent = values[-WINDOW:]
    if last <= min(recent):
        return StopDecision(False, f"last loss {last:.4g} at epoch {count} is the best of the last {len(recent)}")
    if best not in recent:  # by value, as the reference (equal losses count)
        return StopDecision(
            True,
            f"best loss {best:.4g} at epoch {best_epoch} is older than the last three epochs "
            f"(paper rule, after {count} epochs)",
        )
    return StopDecision(False, f"best loss {best:.4g} at epoch {best_epoch} is within the last {WINDOW} epochs")


def decide(
    losses: Sequence[float],
    round_index: int,
    *,
    max_epochs: int = 200,
    fixed_epochs: int | None = None,
    min_round0_epochs: int = MIN_EPOCHS_ROUND0,
) -> StopDecision:
    """Stop or continue after the latest epoch.

    With `fixed_epochs`, stop exactly after that many epochs; otherwise the
    paper rule. A non-finite loss stops at once, and the hard cap `max_epochs`
    always applies (it wins over a larger `fixed_epochs`).

    Args:
        losses: per-epoch mean generator losses, oldest first.
        round_index: the round (0-based).
        max_epochs: hard cap >= 1.
        fixed_epochs: optional exact number of epochs >= 1.
        min_round0_epochs: the paper rule's floor in round 0 (10, or more: `GanConfig.min_steps` in epochs).

    Raises:
        ValueError: on a bad cap, fixed count or round.
    """
    if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1:
        raise ValueError(f"max_epochs must be a positive int, got {max_epochs!r}")
    if fixed_epochs is not None and (
        isinstance(fixed_epochs, bool) or not isinstance(fixed_epochs, int) or fixed_epochs < 1
    ):
        raise ValueError(f"fixed_epochs must be a positive int or None, got {fixed_epochs!r}")
    if isinstance(round_index, bool) or not isinstance(round_index, int) or round_index < 0:
        raise ValueError(f"round_index must be an int >= 0, got {round_index!r}")
    count = len(losses)
    broken = [epoch for epoch, value in enumerate(losses, start=1) if not math.isfinite(float(value))]
    if broken:
        return StopDecision(True, f"generator loss is {float(losses[broken[0] - 1])} at epoch {broken[0]}: stopping")
    if fixed_epochs is not None and count >= min(fixed_epochs, max_epochs):
        if fixed_epochs <= max_epochs:
            return StopDecision(True, f"fixed number of epochs reached ({fixed_epochs})")
        return StopDecision(
            True, f"hard cap of {max_epochs} epochs reached before the {fixed_epochs} fixed epochs asked for"
        )
    if fixed_epochs is not None:
        return StopDecision(False, f"fixed schedule: epoch {count} of {min(fixed_epochs, max_epochs)}")
    decision = paper_rule(losses, round_index, min_round0_epochs)
    if decision.stop:
        return decision
    if count >= max_epochs:
        return StopDecision(True, f"hard cap of {max_epochs} epochs reached; the paper rule had not stopped "
                                  f"({decision.reason})")
    return decision
