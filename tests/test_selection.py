"""Selection rules and curriculum order on hand-made loss vectors (Chapters 04-05)."""

import pytest
import torch

from course_lib.engine.selection import (
    curriculum_sort,
    forget_rate_schedule,
    disagreement_select,
    peer_review_select,
    self_review_select,
    small_loss_selection,
)


def test_small_loss_keeps_int_of_keep_ratio_times_batch_like_coteaching():
    losses = torch.tensor([0.9, 0.1, 0.5, 0.3, 2.0])
    # Han et al.: num_remember = int((1 - forget_rate) * len(batch)) = int(0.6 * 5) = 3
    assert small_loss_selection(losses, 0.6).tolist() == [False, True, True, True, False]
    assert small_loss_selection(losses, 1.0).all()
    assert small_loss_selection(losses, 0.01).tolist() == [False, True, False, False, False]  # at least one


def test_small_loss_ties_break_by_position():
    assert small_loss_selection(torch.tensor([1.0, 1.0, 1.0, 0.0]), 0.5).tolist() == [True, False, False, True]


def test_peer_review_swaps_and_self_review_does_not():
    losses_a = torch.tensor([0.1, 0.2, 5.0, 4.0])  # A distrusts pairs 2 and 3
    losses_b = torch.tensor([3.0, 0.1, 0.2, 6.0])  # B distrusts pairs 0 and 3
    update_a, update_b = peer_review_select(losses_a, losses_b, keep_ratio=0.5)
    assert update_a.tolist() == [False, True, True, False]  # what B kept
    assert update_b.tolist() == [True, True, False, False]  # what A kept
    self_a, self_b = self_review_select(losses_a, losses_b, keep_ratio=0.5)
    assert self_a.tolist() == [True, True, False, False]
    assert self_b.tolist() == [False, True, True, False]
    assert not torch.equal(update_a, self_a) and not torch.equal(update_b, self_b)


def test_peer_and_self_review_agree_when_models_agree():
    losses = torch.tensor([0.3, 0.1, 0.9])
    assert [m.tolist() for m in peer_review_select(losses, losses, 0.67)] == [m.tolist() for m in self_review_select(losses, losses, 0.67)]


def test_forget_rate_ramps_linearly_then_stays():
    assert [forget_rate_schedule(e, 0.4, ramp_epochs=4) for e in range(6)] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.4])
    assert forget_rate_schedule(0, 0.2, ramp_epochs=0) == 0.2
    with pytest.raises(ValueError, match="noise_rate"):
        forget_rate_schedule(0, 1.2)


def test_curriculum_sort_goes_from_large_to_small_summed_margin():
    margins_a = torch.tensor([0.5, 3.0, -2.0, 1.0])
    margins_b = torch.tensor([0.5, -1.0, -1.0, 2.0])
    assert curriculum_sort(margins_a, margins_b).tolist() == [3, 1, 0, 2]  # sums 1, 2, -3, 3
    assert curriculum_sort(margins_a).tolist() == [1, 3, 0, 2]
    assert curriculum_sort(torch.tensor([1.0, 1.0, 2.0])).tolist() == [2, 0, 1]


@pytest.mark.parametrize("bad", [0.0, 1.5])
def test_bad_keep_ratio_is_named(bad):
    with pytest.raises(ValueError, match="keep_ratio"):
        small_loss_selection(torch.ones(3), bad)


def test_coteaching_plus_reviews_only_the_pairs_the_models_disagree_on():
    ln2 = float(torch.log(torch.tensor(2.0)))
    losses_a = torch.tensor([0.1, 0.2, 2.0, 0.3, 0.5, 3.0])  # A agrees with the label on 0, 1, 3, 4
    losses_b = torch.tensor([0.2, 1.5, 0.1, 0.4, 2.5, 0.1])  # B agrees on 0, 2, 3, 5
    # disagreement: pairs 1, 2, 4, 5 (exactly one loss below ln 2)
    assert ((losses_a < ln2) != (losses_b < ln2)).nonzero().flatten().tolist() == [1, 2, 4, 5]
    update_a, update_b = disagreement_select(losses_a, losses_b, keep_ratio=0.5)
    # A keeps its 2 smallest among {1, 2, 4, 5}: pairs 1 and 4, for B; B keeps 2 and 5, for A
    assert update_a.nonzero().flatten().tolist() == [2, 5]
    assert update_b.nonzero().flatten().tolist() == [1, 4]
    # pairs both models agree on (0, 3) are never used
    assert not (update_a | update_b)[[0, 3]].any()


def test_coteaching_plus_updates_nobody_without_disagreement():
    losses = torch.tensor([0.1, 0.2, 3.0])
    update_a, update_b = disagreement_select(losses, losses + 0.01, keep_ratio=0.9)
    assert not update_a.any() and not update_b.any()
