"""Losses of docs/method.md sections 4 and 6, as pure functions of tensors.

`instance_loss` is plain instance discrimination (round 0). `isl_loss` adds
the neighbour ("affinity") term and the hard-positive KL term; its (B, N)
work is done by one custom autograd function with the analytic gradient so
that it costs few passes over the logits. `discriminator_loss` and
`generator_loss` are the GAN's BCE losses over feature triplets.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from isl_cli.neighbors import NeighborGraph

Discriminator = Callable[[Tensor], Tensor]

#: Below this P_A the softmax may have lost it: the member term is taken from the logits instead.
_TINY_MASS = 1e-30
#: Elements per row block in `_hard_positive_pass` (2 blocks for B = 128, N = 50,000).
BLOCK_ELEMENTS = 1 << 22


def instance_loss(logits: Tensor, indices: Tensor) -> Tensor:
    """Instance discrimination: sum over the batch of -log p_ii, divided by B.

    Args:
        logits: (B, N) z_ij = f_i . M_j / T.
        indices: (B,) int64 image index i of each row.

    Returns:
        0-dim loss.
    """
    _check_logits(logits, indices)
    return F.cross_entropy(logits, indices)


def isl_loss(
    logits: Tensor,
    indices: Tensor,
    graph: NeighborGraph,
    memory: Tensor,
    temperature: float,
    hp_weight: float = 0.5,
) -> dict[str, Tensor]:
    """The feature-learning loss of section 4.

    With p_ij = softmax_j(z_ij):
    rows with |A(i)| = 1 give L_inst = -log p_ii; rows with |A(i)| > 1 give
    L_aff = -log sum_{j in A(i)} p_ij and L_hp = w * KL(p_i || q), where
    q = softmax_j(M_h . M_j / T) (no gradient) and h is the member of
    A(i) \\ {i} with the largest M_h . M_i (the smallest index on ties).

    Args:
        logits: (B, N) z_ij = f_i . M_j / T, computed from the bank BEFORE its update.
        indices: (B,) int64 image index of each row (may repeat).
        graph: the neighbour graph over the N images (same device as `logits`).
        memory: (N, D) bank rows (read only; no gradient).
        temperature: T > 0.
        hp_weight: w >= 0.

    Returns:
        {"loss", "inst", "aff", "hp"}: 0-dim tensors; each part is its sum
        over the batch divided by B, and loss = inst + aff + hp.

    Host syncs: the width of the padded neighbour table, and two finiteness
    checks that pick a slower, overflow-proof path only when needed.
    """
    _check_logits(logits, indices)
    num_items = logits.shape[1]
    if graph.num_nodes != num_items or memory.dim() != 2 or memory.shape[0] != num_items:
        raise ValueError(
            f"logits have {num_items} columns but the graph has {graph.num_nodes} nodes "
            f"and the memory has shape {tuple(memory.shape)}"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not hp_weight >= 0:
        raise ValueError(f"hp_weight must be >= 0, got {hp_weight}")
    members, member_mask = graph.padded_rows(indices)  # (B, L), (B, L)
    has_neighbours = member_mask[:, 1] if member_mask.shape[1] > 1 else torch.zeros_like(member_mask[:, 0])  # (B,)
    memory = memory.detach().to(logits.dtype)
    hard_queries = None
    if member_mask.shape[1] > 1 and hp_weight > 0:
        hard = _hard_positives(indices, members, member_mask, memory)  # (B,)
        hard_queries = memory[hard] / temperature  # (B, D) M_h / T
    inst, aff, hp = _IslLogitLoss.apply(
        logits, members, member_mask, has_neighbours, hard_queries, memory, float(hp_weight)
    )
    return {"loss": inst + aff + hp, "inst": inst, "aff": aff, "hp": hp}


def _hard_positives(indices: Tensor, members: Tensor, member_mask: Tensor, memory: Tensor) -> Tensor:
    """h(i) = argmax over A(i) \\ {i} of M_h . M_i; rows without neighbours get i itself.

    Args:
        indices: (B,); members, member_mask: (B, L) from `padded_rows`; memory: (N, D).

    Returns:
        (B,) int64.
    """
    neighbours = members[:, 1:]  # (B, L - 1)
    similarity = torch.einsum("bkd,bd->bk", memory[neighbours], memory[indices])  # (B, L - 1)
    similarity = similarity.masked_fill(~member_mask[:, 1:], float("-inf"))  # (B, L - 1)
    best = similarity.argmax(dim=1, keepdim=True)  # (B, 1) first maximum = smallest index on ties
    return neighbours.gather(1, best).squeeze(1)  # (B,) padding holds i itself


class _IslLogitLoss(torch.autograd.Function):
    """Forward: the three loss parts from the logits. Backward: the analytic gradient.

    Per row, with P_A = sum_{j in A} p_j, y_j = M_h . M_j / T the hard-positive
    logits and v = y - z:
    KL(p || q) = lse(y) - lse(z) - sum_j p_j v_j, and
    dL/dz_j = s (p_j - [j in A] p_j / P_A) + w (p_j sum_k p_k v_k - p_j v_j),
    where s is the incoming gradient of the row's part (inst or aff) / B and
    w = hp_weight * (incoming gradient of hp) / B on rows with neighbours, 0 elsewhere.

    Cost over (B, N): forward one softmax, one matmul and the blocked passes
    of `_hard_positive_pass` (exp + sum, subtract, multiply + sum); backward
    two in-place passes that turn the saved p * v into the gradient (a second
    backward recomputes p * v). Only two fresh (B, N) buffers are allocated:
    on CPU each one costs page faults.
    """

    @staticmethod
    def forward(ctx, logits, members, member_mask, has_neighbours, hard_queries, memory, hp_weight):
        batch = logits.shape[0]
        probs = torch.softmax(logits, dim=1)  # (B, N)
        member_probs = probs.gather(1, members) * member_mask  # (B, L) p_j on A, 0 on padding
        member_mass = member_probs.sum(dim=1)  # (B,) P_A
        if bool((member_mass > _TINY_MASS).all()):  # one host sync; always true for unit features
            row_loss = -member_mass.log()  # (B,) -log P_A (= -log p_ii when A = {i})
            member_share = member_probs / member_mass[:, None]  # (B, L) p_j / P_A
            best = member_probs.argmax(dim=1, keepdim=True)  # (B, 1) there p >= P_A / L: its log is exact
            log_norm = logits.gather(1, members.gather(1, best)) - member_probs.gather(1, best).log()
            log_norm = log_norm.squeeze(1)  # (B,) lse(z)
        else:  # P_A underflowed: take it from the logits instead (two more passes)
            log_norm = logits.amax(dim=1) - probs.amax(dim=1).log()  # (B,) p >= 1/N at the arg-max
            row_loss, member_share = _member_loss_from_logits(logits, log_norm, members, member_mask)
        inst = row_loss.masked_fill(has_neighbours, 0.0).sum() / batch
        aff = row_loss.masked_fill(~has_neighbours, 0.0).sum() / batch
        ctx.batch, ctx.hp_weight = batch, hp_weight
        if hard_queries is None:
            ctx.save_for_backward(probs, members, member_share, has_neighbours)
            return inst, aff, logits.new_zeros(())
        shift = torch.mm(hard_queries, memory.t())  # (B, N) y = M_h . M_j / T
        log_norm_q, mean_shift = _hard_positive_pass(shift, logits, probs)  # (B,), (B,); shift is now p * v
        kl = log_norm_q - log_norm - mean_shift  # (B,) KL(p || q)
        hp = hp_weight * kl.masked_fill(~has_neighbours, 0.0).sum() / batch
        ctx.save_for_backward(probs, members, member_share, has_neighbours, mean_shift, logits, hard_queries, memory)
        ctx.scaled_shift = shift  # becomes the first gradient, in place
        return inst, aff, hp

    @staticmethod
    def backward(ctx, grad_inst, grad_aff, grad_hp):
        probs, members, member_share, has_neighbours = ctx.saved_tensors[:4]
        row_scale = torch.where(has_neighbours, grad_aff, grad_inst) / ctx.batch  # (B,)
        if len(ctx.saved_tensors) > 4:
            mean_shift, logits, hard_queries, memory = ctx.saved_tensors[4:]
            hp_scale = (grad_hp * ctx.hp_weight / ctx.batch) * has_neighbours  # (B,)
            grad = ctx.scaled_shift  # (B, N) p * v
            if grad is None:  # a second backward through the same graph: recompute p * v
                grad = torch.mm(hard_queries, memory.t()).sub_(logits).mul_(probs)
            ctx.scaled_shift = None
            grad.mul_(-hp_scale[:, None])  # (B, N) -w p v
            grad.addcmul_(probs, (row_scale + hp_scale * mean_shift)[:, None])  # (B, N) + p (s + w sum p v)
        else:
            grad = probs * row_scale[:, None]  # (B, N)
        grad.scatter_add_(1, members, -row_scale[:, None] * member_share)  # (B, N) minus s p_j / P_A on A
        return grad, None, None, None, None, None, None


def _hard_positive_pass(hard_logits: Tensor, logits: Tensor, probs: Tensor) -> tuple[Tensor, Tensor]:
    """lse(y) and sum_j p_j v_j per row, turning `hard_logits` y into p * v = p * (y - z) in place.

    Works on a few blocks of rows, so that a block's passes hit the cache and
    no (B, N) temporary is allocated, while keeping the number of parallel
    operations small (each one waits for every thread). exp(y) needs no max
    shift for bank rows: y_h = |M_h|^2 / T >= 0 keeps each sum >= 1 and rows of
    norm <= sqrt(3) keep y <= 3 / T, far from overflow; a sum that still
    overflows is redone with torch.logsumexp (one host sync).

    Args:
        hard_logits: (B, N) y, overwritten with p * (y - z).
        logits: (B, N) z.
        probs: (B, N) p = softmax(z).

    Returns:
        lse(y) (B,) and sum_j p_j (y_j - z_j) (B,).
    """
    batch, width = hard_logits.shape
    rows = max(1, BLOCK_ELEMENTS // max(width, 1))
    blocks = [slice(start, start + rows) for start in range(0, batch, rows)]  # a few blocks of rows
    scratch = hard_logits.new_empty(min(rows, batch), width)  # (C, N)
    log_norm = hard_logits.new_empty(batch)  # (B,)
    for block in blocks:
        exps = torch.exp(hard_logits[block], out=scratch[: hard_logits[block].shape[0]])  # (C, N)
        torch.sum(exps, dim=1, out=log_norm[block])
    log_norm.log_()
    if not bool(torch.isfinite(log_norm).all()):
        log_norm = torch.logsumexp(hard_logits, dim=1)  # (B,)
    mean_shift = hard_logits.new_empty(batch)  # (B,)
    for block in blocks:
        scaled = hard_logits[block].sub_(logits[block]).mul_(probs[block])  # (C, N) p * v, in place
        torch.sum(scaled, dim=1, out=mean_shift[block])
    return log_norm, mean_shift


def _member_loss_from_logits(logits, log_norm, members, member_mask) -> tuple[Tensor, Tensor]:
    """-log P_A (B,) and p_j / P_A (B, L), robust to P_A underflowing in the softmax."""
    member_logits = logits.gather(1, members).masked_fill(~member_mask, float("-inf"))  # (B, L)
    log_member_mass = torch.logsumexp(member_logits, dim=1)  # (B,) log sum_A exp z
    member_share = (member_logits - log_member_mass[:, None]).exp()  # (B, L), 0 on padding
    return log_norm - log_member_mass, member_share


def discriminator_loss(dis: Discriminator, a: Tensor, p: Tensor, n: Tensor, p_fake: Tensor) -> Tensor:
    """BCE for the discriminator step (section 6); `p_fake` is detached here.

    real = BCE(dis(a, p, n), 1); fake = BCE(dis(a, p, p'), 0) / 2 + BCE(dis(a, p', n), 0) / 2;
    returns (real + fake) / 2.

    Args:
        dis: maps a (B, 3D) concatenation to (B, 1) probabilities in (0, 1).
        a, p, n, p_fake: (B, D) anchor, positive, negative and generated proxy.

    Returns:
        0-dim loss.
    """
    p_fake = p_fake.detach()
    # one call of `dis` on the three triplet batches stacked (a DDP-wrapped module may run once per step)
    real, fake_p, fake_n = _score(dis, [(a, p, n), (a, p, p_fake), (a, p_fake, n)])  # (B, 1) each
    fake = 0.5 * _bce(fake_p, 0.0) + 0.5 * _bce(fake_n, 0.0)
    return 0.5 * (_bce(real, 1.0) + fake)


def generator_loss(dis: Discriminator, a: Tensor, p: Tensor, n: Tensor, p_fake: Tensor) -> Tensor:
    """BCE for the generator step: dis should say 1 on (a, p, p') and (a, p', n), 1/2 each.

    Args:
        dis: maps a (B, 3D) concatenation to (B, 1) probabilities in (0, 1).
        a, p, n, p_fake: (B, D); the gradient flows into `p_fake`.

    Returns:
        0-dim loss.
    """
    fake_p, fake_n = _score(dis, [(a, p, p_fake), (a, p_fake, n)])  # (B, 1) each
    return 0.5 * _bce(fake_p, 1.0) + 0.5 * _bce(fake_n, 1.0)


def _score(dis: Discriminator, triplets: list[tuple[Tensor, Tensor, Tensor]]) -> tuple[Tensor, ...]:
    """dis over several (B, D) triplets in one call: (B, 1) probabilities per triplet."""
    stacked = torch.cat([torch.cat(t, dim=1) for t in triplets], dim=0)  # (T*B, 3D)
    return dis(stacked).chunk(len(triplets), dim=0)


def _bce(probabilities: Tensor, target: float) -> Tensor:
    """Mean BCE; a NaN probability (a diverged network) gives a NaN loss, which stops the stage with one line,
    instead of binary_cross_entropy's range error. Finite inputs give exactly binary_cross_entropy's value."""
    finite = probabilities.nan_to_num(0.5)  # (B, 1): no host sync to test for NaN
    return F.binary_cross_entropy(finite, torch.full_like(finite, target)) + probabilities.sum() * 0.0


def _check_logits(logits: Tensor, indices: Tensor) -> None:
    if logits.dim() != 2 or indices.dim() != 1 or indices.shape[0] != logits.shape[0]:
        raise ValueError(
            f"logits must be (B, N) and indices (B,), got {tuple(logits.shape)} and {tuple(indices.shape)}"
        )
