"""Reconstruction (SPEC section 3, the paper's Algorithm 2): representation R -> atomic positions.

The atom count, composition and lattice come straight from R (:func:`srd.representation.decode`); only
Cartesian positions move, by gradient descent on the L1 distance between the EAD block + d_min of the
trial structure and the target, with basin hopping:

    for trial in 1..T:                       fresh uniform random fractional coordinates
        for hop in 1..H:
            Adam(lr) + ReduceLROnPlateau(factor, patience) for <= S steps; keep the trial's best x
            x = best_of_trial + U[-hop_size, hop_size] Angstrom per coordinate
    return the positions with the lowest loss over all trials

Batched: every trial ("replica") of every crystal advances in one ``srd.ead_batch`` call per step, with
its own Adam state, learning-rate schedule and best-so-far tracking (nothing is shared between
replicas). Every crystal draws its random numbers from its own generator, seeded by (seed, crystal key),
so a crystal's result does not depend on what else is in the batch, on the batch size or on how crystals
are sharded across processes.

Options beyond the paper (all off by default, so the default is Algorithm 2 as stated):
  * ``tol``: a crystal stops once one of its trials reaches a loss <= tol (others are unaffected).
  * ``polish_steps``: after the hops, every trial's best structure is refined with Adam at a small
    learning rate (optionally in float64), and the winner is chosen after the polish.

Named budgets (the paper's, srd's fast one, ...) are data: presets/reconstruct.toml, read into
:data:`PRESETS`; ``ReconstructConfig.preset("fast")`` (or :func:`preset`) gives one's config.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from pymatgen.core import Lattice, Structure

from ..descriptor import EADParams, ead_batch, min_distance, validate_batch
from ..representation import EAD_SCALE, Decoded, pooled_ead
from .config import ReconstructConfig


@dataclass
class ReconstructResult:
    """One reconstructed crystal."""

    structure: Structure
    loss: float  # L1 of the chosen trial (after the polish when there is one)
    trial: int  # which trial won
    trial_losses: list[float]  # best loss of every trial
    evaluations: int  # descriptor evaluations spent on this crystal (all trials)
    seconds: float  # wall time of the batch, divided among its crystals by atom count
    symmetrized: str | None = None  # the space group the final symmetrisation snapped onto, if kept


def crystal_seed(seed: int, key: str) -> int:
    """The seed of one crystal's generator: a hash of the run seed and the crystal's key (its id)."""
    h = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class _Replicas:
    """All trials of a set of crystals as one ragged batch, with per-replica bookkeeping."""

    def __init__(self, targets: Sequence[Decoded], trials: int, dtype, device, dmin_weight: float = 1.0):
        self.n_crystals = len(targets)
        self.trials = trials
        counts = [d.n_atoms for d in targets]
        self.counts = torch.tensor([c for c in counts for _ in range(trials)], dtype=torch.int64)
        self.ptr = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(self.counts, 0)]).to(device)
        cells = torch.stack([torch.tensor(d.lattice_matrix(), dtype=dtype) for d in targets])  # once each
        self.cells = cells.repeat_interleave(trials, dim=0).to(device)
        self.numbers = torch.tensor(
            [z for d in targets for _ in range(trials) for z in d.numbers], dtype=torch.int64, device=device
        )
        self.target = torch.stack([d.target.to(dtype) for d in targets for _ in range(trials)]).to(device)
        self.replica_of_atom = torch.repeat_interleave(torch.arange(len(self.counts)), self.counts).to(device)
        self.n_atoms = int(self.ptr[-1])
        self.atom_cells = self.cells[self.replica_of_atom]  # [N, 3, 3] each atom's cell
        self.weight = None  # per-entry loss weights; None = all 1 (SPEC)
        if dmin_weight != 1.0:
            self.weight = torch.ones(self.target.shape[1], dtype=dtype, device=device)
            self.weight[-1] = dmin_weight

    def place_(self, pos: torch.Tensor, replica: int, frac) -> None:
        """Put replica ``replica``'s atoms at fractional coordinates ``frac`` [n, 3] of its cell."""
        s, e = int(self.ptr[replica]), int(self.ptr[replica + 1])
        pos[s:e] = torch.as_tensor(np.asarray(frac), dtype=pos.dtype, device=pos.device) @ self.cells[replica]


def _loss(pos, reps: _Replicas, params: EADParams, active_atoms=None, active_reps=None) -> torch.Tensor:
    """L1 distance [R] between (pooled EAD / 1e6, d_min) of each replica and its target."""
    if active_atoms is None:
        feats = ead_batch(pos, reps.numbers, reps.cells, reps.ptr, params=params, check=False)
        pred = torch.cat(
            [
                pooled_ead(feats, reps.ptr) / EAD_SCALE,
                min_distance(pos, reps.cells, reps.ptr, check=False)[:, None],
            ],
            dim=1,
        )
        return _l1(pred, reps.target, reps.weight)
    counts = reps.counts[active_reps.cpu()]
    ptr = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(counts, 0)]).to(pos.device)
    sub = pos[active_atoms]
    cells = reps.cells[active_reps]
    feats = ead_batch(sub, reps.numbers[active_atoms], cells, ptr, params=params, check=False)
    pred = torch.cat(
        [pooled_ead(feats, ptr) / EAD_SCALE, min_distance(sub, cells, ptr, check=False)[:, None]], dim=1
    )
    return _l1(pred, reps.target[active_reps], reps.weight)


def _l1(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    diff = (pred - target).abs()
    return (diff if weight is None else diff * weight).mean(dim=1)


class _Adam:
    """Adam (PyTorch's update rule) with a learning rate per replica and per-replica step counts."""

    def __init__(self, n_atoms: int, n_reps: int, lr: float, dtype, device, betas=(0.9, 0.999), eps=1e-8):
        self.m = torch.zeros((n_atoms, 3), dtype=dtype, device=device)
        self.v = torch.zeros((n_atoms, 3), dtype=dtype, device=device)
        self.t = torch.zeros(n_reps, dtype=torch.float64, device=device)
        self.lr = torch.full((n_reps,), float(lr), dtype=torch.float64, device=device)
        self.b1, self.b2 = betas
        self.eps = eps

    def step(
        self, pos: torch.Tensor, grad: torch.Tensor, rep_of_atom: torch.Tensor, moving: torch.Tensor
    ) -> None:
        """Update the atoms of replicas where ``moving`` is True (others keep position and state)."""
        mv = moving[rep_of_atom][:, None]
        self.t = torch.where(moving, self.t + 1, self.t)
        m = self.b1 * self.m + (1 - self.b1) * grad
        v = self.b2 * self.v + (1 - self.b2) * grad * grad
        t = self.t[rep_of_atom][:, None].clamp(min=1)
        bc1 = (1 - self.b1**t).to(pos.dtype)
        bc2 = (1 - self.b2**t).to(pos.dtype)
        step = self.lr[rep_of_atom][:, None].to(pos.dtype) * (m / bc1) / ((v / bc2).sqrt() + self.eps)
        self.m = torch.where(mv, m, self.m)
        self.v = torch.where(mv, v, self.v)
        pos.sub_(torch.where(mv, step, torch.zeros_like(step)))


class _Plateau:
    """ReduceLROnPlateau (mode 'min', relative threshold, no cooldown) for every replica at once."""

    def __init__(self, n_reps: int, factor: float, patience: int, threshold: float, device):
        self.best = torch.full((n_reps,), math.inf, dtype=torch.float64, device=device)
        self.bad = torch.zeros(n_reps, dtype=torch.int64, device=device)
        self.factor, self.patience, self.threshold = factor, patience, threshold

    def step(self, loss: torch.Tensor, opt: _Adam, moving: torch.Tensor) -> None:
        loss = loss.double()
        better = loss < self.best * (1 - self.threshold)
        self.best = torch.where(moving & better, loss, self.best)
        self.bad = torch.where(
            moving, torch.where(better, torch.zeros_like(self.bad), self.bad + 1), self.bad
        )
        reduce = moving & (self.bad > self.patience)
        new_lr = opt.lr * self.factor
        opt.lr = torch.where(reduce & (opt.lr - new_lr > 1e-8), new_lr, opt.lr)
        self.bad = torch.where(reduce, torch.zeros_like(self.bad), self.bad)


def _descend(pos, reps, params, steps, lr, cfg, alive, best_loss, best_pos, evals, hook=None, projector=None):
    """Adam + plateau schedule from ``pos`` for ``steps`` steps on every live replica, tracking the best.

    ``projector`` (a :class:`~srd.reconstruction.symmetry.SymmetryProjector`): after every step the
    symmetric replicas are projected back onto their group's invariant positions (projected descent;
    Adam's per-coordinate scaling would otherwise break the symmetry the invariant loss preserves)."""
    opt = _Adam(reps.n_atoms, len(reps.counts), lr, pos.dtype, pos.device)
    sched = _Plateau(
        len(reps.counts), cfg.plateau_factor, cfg.plateau_patience, cfg.plateau_threshold, pos.device
    )
    for _ in range(steps):
        if not bool(alive.any()):
            break
        all_alive = bool(alive.all())
        x = pos.detach().requires_grad_()
        if all_alive:
            loss = _loss(x, reps, params)
        else:
            act_reps = torch.nonzero(alive).flatten()
            act_atoms = torch.nonzero(alive[reps.replica_of_atom]).flatten()
            sub = _loss(x, reps, params, act_atoms, act_reps)
            loss = torch.full((len(reps.counts),), math.inf, dtype=sub.dtype, device=sub.device)
            loss = loss.index_put((act_reps,), sub)
        (grad,) = torch.autograd.grad(loss[alive].sum(), x)
        ld = loss.detach()
        evals += alive.long()
        improved = alive & (ld.double() < best_loss)
        best_loss.copy_(torch.where(improved, ld.double(), best_loss))
        atom_improved = improved[reps.replica_of_atom][:, None]
        best_pos.copy_(torch.where(atom_improved, pos.to(best_pos.dtype), best_pos))
        opt.step(pos, grad.detach(), reps.replica_of_atom, alive)
        if projector is not None:
            projector.project_(pos, reps.atom_cells)
        sched.step(ld, opt, alive)
        if cfg.tol is not None:  # a crystal is done once one of its trials reached the tolerance
            done = (best_loss.view(-1, reps.trials) <= cfg.tol).any(dim=1)
            alive &= ~done.repeat_interleave(reps.trials)
        if hook is not None:
            hook(1)
    return pos


def _swap_hops(pos, best_pos, targets, reps, cfg, per_crystal_uniform) -> None:
    """Swap hops: with probability swap_prob a replica restarts from its best structure with two atoms of
    different elements exchanged. Minima that differ from the truth by such an exchange (e.g. O and F,
    whose Z-weighted densities are almost the same) are common and a displacement hop rarely undoes them."""
    draws = per_crystal_uniform(lambda b: (cfg.trials, 3)).double().cpu()
    numbers = reps.numbers.cpu()
    for r in range(len(reps.counts)):
        u, a, c = draws[r].tolist()
        if u >= cfg.swap_prob:
            continue
        s, e = int(reps.ptr[r]), int(reps.ptr[r + 1])
        z = numbers[s:e]
        i = int(a * (e - s))
        others = torch.nonzero(z != z[i]).flatten()
        if len(others) == 0:  # a single element: nothing to exchange, keep the displacement hop
            continue
        j = int(others[int(c * len(others))])
        x = best_pos[s:e].to(pos.dtype).clone()
        x[[i, j]] = x[[j, i]]
        pos[s:e] = x


def _symmetric_starts(pos, targets, keys, reps, cfg):
    """Put the last ``cfg.symmetric_trials`` trials of every crystal on a random symmetric structure (in
    place) and return the projector that keeps them symmetric, and a per-replica "is symmetric" mask.

    Each crystal draws its groups and sites from its own NumPy generator (seeded by the crystal's seed),
    apart from the torch generators, so the uniform trials are the same with and without this option."""
    from .symmetry import SymmetryProjector, choose_start

    symmetric = torch.zeros(len(reps.counts), dtype=torch.bool)
    entries = []
    if cfg.symmetric_trials > 0:
        for b, d in enumerate(targets):
            rng = np.random.default_rng([crystal_seed(cfg.seed, keys[b]), 1])
            lattice = d.lattice_matrix()
            min_dist = float(np.clip(0.8 * float(d.target[-1]), 0.5, 3.0))
            for trial in range(cfg.trials - cfg.symmetric_trials, cfg.trials):
                start = choose_start(lattice, list(d.numbers), rng, min_dist=min_dist)
                if start is None:
                    continue
                frac, group, src = start
                r = b * cfg.trials + trial
                reps.place_(pos, r, frac)
                entries.append((int(reps.ptr[r]), group, src))
                symmetric[r] = True
    return SymmetryProjector(entries, pos.dtype, pos.device), symmetric.to(pos.device)


def _symmetrize_winners(winners, targets, cfg, params, device, progress) -> torch.Tensor:
    """Snap each crystal's best structure onto the space group spglib finds within cfg.symmetrize_tol,
    polish it there (projected; polish_steps, at least one evaluation) and keep it only when its loss is
    not higher than the unsymmetrised structure's. Updates ``winners`` in place; returns the extra
    evaluations per crystal."""
    from .symmetry import SymmetryProjector, detect_symmetry

    extra = torch.zeros(len(targets), dtype=torch.int64)
    chosen, entries, offset = [], [], 0
    for b, d in enumerate(targets):
        lattice = d.lattice_matrix()
        frac = winners[b][1] @ np.linalg.inv(lattice)
        found = detect_symmetry(frac, list(d.numbers), lattice, cfg.symmetrize_tol)
        if found is None:
            continue
        chosen.append(b)
        entries.append((offset, found[0], found[1]))
        offset += d.n_atoms
    if not chosen:
        return extra
    pdtype = _DTYPES[cfg.polish_dtype]
    sub = [targets[b] for b in chosen]
    reps = _Replicas(sub, 1, pdtype, device, cfg.dmin_weight)
    projector = SymmetryProjector(entries, pdtype, device)
    pos = torch.cat([torch.as_tensor(winners[b][1], dtype=pdtype, device=device) for b in chosen])
    projector.project_(pos, reps.atom_cells)
    best_loss = torch.full((len(chosen),), math.inf, dtype=torch.float64, device=device)
    best_pos = pos.clone()
    alive = torch.ones(len(chosen), dtype=torch.bool, device=device)
    evals = torch.zeros(len(chosen), dtype=torch.int64, device=device)
    steps = max(cfg.polish_steps, 1)
    _descend(
        pos,
        reps,
        params,
        steps,
        cfg.polish_lr,
        cfg.replace(tol=None),
        alive,
        best_loss,
        best_pos,
        evals,
        progress,
        projector,
    )
    for k, b in enumerate(chosen):
        extra[b] = int(evals[k])
        if float(best_loss[k]) <= winners[b][0]:
            s, e = int(reps.ptr[k]), int(reps.ptr[k + 1])
            winners[b] = (
                float(best_loss[k]),
                best_pos[s:e].detach().double().cpu().numpy(),
                entries[k][1].symbol,
            )
    return extra


def _template_starts(pos, targets, keys, reps, cfg, templates, params) -> tuple[torch.Tensor, torch.Tensor]:
    """Put the first ``cfg.template_trials`` trials of every crystal on its best template starts (in place).

    With ``cfg.template_screen`` > template_trials, that many candidates (closest cell shapes first) are
    scored by their loss as they are (one forward evaluation each, all crystals in one batch) and the
    trials start from the lowest. Returns the per-replica "started from a template" mask and the
    screening evaluations per crystal. Draws no random numbers."""
    templated = torch.zeros(len(reps.counts), dtype=torch.bool)
    screened = torch.zeros(len(targets), dtype=torch.int64)
    if cfg.template_trials <= 0 or templates is None:
        return templated.to(pos.device), screened
    k = max(cfg.template_trials, cfg.template_screen)
    starts = [
        templates.starts(
            d.numbers, d.lengths, d.angles, k, exclude={keys[b]}, assignments=6 if cfg.template_screen else 2
        )
        for b, d in enumerate(targets)
    ]
    if cfg.template_screen > cfg.template_trials and any(len(c) > cfg.template_trials for c in starts):
        owners = [b for b, c in enumerate(starts) for _ in c]
        cand = _Replicas([targets[b] for b in owners], 1, pos.dtype, pos.device, cfg.dmin_weight)
        x = torch.empty((cand.n_atoms, 3), dtype=pos.dtype, device=pos.device)
        for r, (f, _) in enumerate(f for c in starts for f in c):
            cand.place_(x, r, f)
        with torch.no_grad():
            losses = _loss(x, cand, params).double().cpu()
        offset = 0
        for b, c in enumerate(starts):
            order = torch.argsort(losses[offset : offset + len(c)], stable=True).tolist()
            screened[b] = len(c)
            starts[b] = [c[i] for i in order]
            offset += len(c)
    for b in range(len(targets)):
        for trial, (frac, _) in enumerate(starts[b][: cfg.template_trials]):
            reps.place_(pos, b * cfg.trials + trial, frac)
            templated[b * cfg.trials + trial] = True
    return templated.to(pos.device), screened


def _start_losses(pos, reps, params, templated) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss [n_reps] float64 with inf for non-template trials, the starting positions): one forward
    evaluation of every trial as it starts (for ``cfg.start_gain``)."""
    with torch.no_grad():
        loss = _loss(pos, reps, params).double()
    loss = torch.where(templated, loss, torch.full_like(loss, math.inf))
    return loss.cpu(), pos.detach().clone()


def _keep_starts(winners, start, reps, cfg) -> None:
    """Replace a crystal's winner by its best template start when the search did not bring the loss below
    ``cfg.start_gain`` x the start's (in place)."""
    loss0, pos0 = start
    l0 = loss0.view(reps.n_crystals, cfg.trials)
    for b in range(reps.n_crystals):
        t = int(torch.argmin(l0[b]))
        ls = float(l0[b, t])
        if math.isfinite(ls) and winners[b][0] > cfg.start_gain * ls:
            r = b * cfg.trials + t
            s, e = int(reps.ptr[r]), int(reps.ptr[r + 1])
            winners[b] = (ls, pos0[s:e].detach().double().cpu().numpy(), None)


def reconstruct(
    targets: Sequence[Decoded],
    keys: Sequence[str],
    *,
    config: ReconstructConfig | None = None,
    params: EADParams | None = None,
    device: str | torch.device = "cpu",
    progress: Callable[[int], None] | None = None,
    initial: Sequence[np.ndarray | None] | None = None,
    templates=None,
) -> list[ReconstructResult]:
    """Reconstruct positions for decoded representations (all trials of all crystals batched).

    Args:
        targets: decoded R vectors (n, composition, lattice and the raw [EAD / 1e6, d_min] target).
        keys: one stable key per crystal (its id): seeds the crystal's own random generator.
        config: Algorithm 2 settings (default: the paper's).
        params: the descriptor grid the targets were computed with.
        device: where to run.
        progress: called with the number of optimiser steps done (for progress bars).
        initial: optional Cartesian positions [n, 3] per crystal to start trial 0 from instead of a random
            draw (the random numbers are drawn all the same, so other trials are unchanged).
        templates: a :class:`~srd.reconstruction.templates.TemplateLibrary` for ``config.template_trials``
            (training crystals; a template whose id equals the crystal's key is never used).

    Returns:
        One :class:`ReconstructResult` per target, in order.
    """
    import time

    cfg = config or ReconstructConfig()
    params = params or EADParams()
    if len(targets) != len(keys):
        raise ValueError(f"reconstruct: {len(targets)} targets but {len(keys)} keys")
    if not targets:
        return []
    n_target = 2 * params.n_features + 1
    for k, d in enumerate(targets):
        if d.target.shape != (n_target,):
            raise ValueError(
                f"reconstruct: target {k} ({keys[k]}) has {tuple(d.target.shape)} values, expected "
                f"{n_target} (pooled EAD of the grid in params, then d_min)"
            )
    t0 = time.perf_counter()
    device = torch.device(device)
    dtype = _DTYPES[cfg.dtype]
    reps = _Replicas(targets, cfg.trials, dtype, device, cfg.dmin_weight)
    validate_batch(
        torch.zeros((reps.n_atoms, 3), dtype=dtype, device=device),
        reps.numbers,
        reps.cells,
        reps.ptr,
        op="reconstruct",
    )
    n_reps = len(reps.counts)
    gens = [torch.Generator().manual_seed(crystal_seed(cfg.seed, k)) for k in keys]

    def per_crystal_uniform(shape_of: Callable[[int], tuple[int, ...]]) -> torch.Tensor:
        # Each crystal draws from its own generator, in the same order whatever the batch.
        return torch.cat(
            [torch.rand(shape_of(b), generator=gens[b], dtype=torch.float64) for b in range(reps.n_crystals)]
        ).to(device=device, dtype=dtype)

    # Fresh uniform fractional coordinates for every trial.
    frac = per_crystal_uniform(lambda b: (cfg.trials * targets[b].n_atoms, 3))
    pos = torch.einsum("nk,nkl->nl", frac, reps.atom_cells)
    if initial is not None:
        if len(initial) != len(targets):
            raise ValueError(f"reconstruct: {len(initial)} initial structures for {len(targets)} targets")
        for b, x in enumerate(initial):
            if x is None:
                continue
            x = torch.as_tensor(np.asarray(x), dtype=dtype, device=device)
            if x.shape != (targets[b].n_atoms, 3):
                raise ValueError(
                    f"reconstruct: initial positions {b} have shape {tuple(x.shape)}, expected "
                    f"({targets[b].n_atoms}, 3)"
                )
            s0 = int(reps.ptr[b * cfg.trials])
            pos[s0 : s0 + targets[b].n_atoms] = x
    projector, symmetric = _symmetric_starts(pos, targets, keys, reps, cfg)
    templated, screened = _template_starts(pos, targets, keys, reps, cfg, templates, params)
    start = _start_losses(pos, reps, params, templated) if cfg.start_gain > 0 else None
    best_loss = torch.full((n_reps,), math.inf, dtype=torch.float64, device=device)
    best_pos = pos.clone()
    evals = torch.zeros(n_reps, dtype=torch.int64, device=device)
    alive = torch.ones(n_reps, dtype=torch.bool, device=device)

    for hop in range(cfg.hops):
        if hop > 0:
            noise = per_crystal_uniform(lambda b: (cfg.trials * targets[b].n_atoms, 3)) * 2 - 1
            hop_size = torch.full((n_reps,), cfg.hop_size, dtype=torch.float64, device=device)
            hop_size[symmetric] = cfg.symmetric_hop_size
            hop_size[templated] = cfg.template_hop_size
            hop_size = hop_size[reps.replica_of_atom].to(dtype)[:, None]
            pos = best_pos.to(dtype) + hop_size * noise
            if cfg.swap_prob > 0:
                _swap_hops(pos, best_pos, targets, reps, cfg, per_crystal_uniform)
            projector.project_(pos, reps.atom_cells)  # symmetric hops stay in their group
        _descend(
            pos, reps, params, cfg.steps, cfg.lr, cfg, alive, best_loss, best_pos, evals, progress, projector
        )

    if cfg.polish_steps > 0:
        pdtype = _DTYPES[cfg.polish_dtype]
        preps = _Replicas(targets, cfg.trials, pdtype, device, cfg.dmin_weight)
        ppos = best_pos.to(pdtype).clone()
        pbest_loss = torch.full((n_reps,), math.inf, dtype=torch.float64, device=device)
        pbest_pos = ppos.clone()
        palive = torch.ones(n_reps, dtype=torch.bool, device=device)
        _descend(
            ppos,
            preps,
            params,
            cfg.polish_steps,
            cfg.polish_lr,
            cfg,
            palive,
            pbest_loss,
            pbest_pos,
            evals,
            progress,
            projector.to(pdtype),
        )
        best_loss, best_pos = pbest_loss, pbest_pos

    bl = best_loss.view(reps.n_crystals, cfg.trials).cpu()
    winners = []  # (loss, Cartesian positions, space group symbol or None) of each crystal's best trial
    for b in range(reps.n_crystals):
        r = b * cfg.trials + int(torch.argmin(bl[b]))
        s, e = int(reps.ptr[r]), int(reps.ptr[r + 1])
        winners.append((float(bl[b].min()), best_pos[s:e].detach().double().cpu().numpy(), None))
    evals_per_crystal = evals.view(reps.n_crystals, cfg.trials).sum(dim=1).cpu() + screened
    if start is not None:
        _keep_starts(winners, start, reps, cfg)
        evals_per_crystal += 1
    if cfg.symmetrize_tol > 0:
        evals_per_crystal += _symmetrize_winners(winners, targets, cfg, params, device, progress)

    seconds = time.perf_counter() - t0
    total_atoms = sum(d.n_atoms for d in targets)
    results = []
    for b, d in enumerate(targets):
        trial = int(torch.argmin(bl[b]))
        loss, cart, group = winners[b]
        lattice = Lattice(d.lattice_matrix())
        structure = Structure(lattice, d.numbers, cart, coords_are_cartesian=True)
        structure = Structure(
            lattice, structure.species, np.mod(structure.frac_coords, 1.0)
        )  # wrap into the cell
        results.append(
            ReconstructResult(
                structure=structure,
                loss=loss,
                trial=trial,
                trial_losses=[float(x) for x in bl[b]],
                evaluations=int(evals_per_crystal[b]),
                symmetrized=group,
                seconds=seconds * d.n_atoms / total_atoms,
            )
        )
    return results
