"""p(composition, size): a small autoregressive model of element multisets (the discrete half of the
factored generator, issue 15).

A crystal's composition is written as the token sequence ``E1 c1 E2 c2 ... STOP``: its elements in
increasing Z, each followed by its number of atoms in the cell. A GRU reads the prefix and a masked
softmax picks the next token among those the grammar allows:

* after the start or a count: an element with a larger Z than the last one (so a sequence *is* a multiset,
  every multiset has exactly one sequence), or STOP once at least one element is placed;
* after an element: a count 1 .. (n_max - atoms so far).

So every sample is a composition of the training vocabulary whose counts sum to n <= n_max, exactly:
no noisy fractions to round, nothing to reject. The same mask restricts sampling to a chemical system
(``allowed``) for ``srd-sample --chemical-system``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..representation.layout import N_ELEMENTS, Layout

__all__ = ["CompositionModel", "compositions_from_R", "composition_block", "fit_composition_model"]

Composition = dict[int, int]  # Z -> atoms in the cell


def compositions_from_R(R: torch.Tensor, layout: Layout, n_max: int) -> list[Composition]:
    """The compositions (Z -> count) held by the composition and size blocks of scaled R [M, L]."""
    R = R.double()
    n = torch.round(R[:, layout.size] * n_max).long()
    frac = R[:, layout.composition]
    counts = torch.round(frac * n[:, None].double()).long()
    out = []
    for row, total in zip(counts.tolist(), n.tolist()):
        comp = {z + 1: c for z, c in enumerate(row) if c > 0}
        if sum(comp.values()) != total or total < 1:
            raise ValueError(f"composition block does not hold integer counts summing to n = {total}")
        out.append(comp)
    return out


def composition_block(comps: Sequence[Mapping[int, int]], n_max: int) -> torch.Tensor:
    """[M, N_ELEMENTS + 1] float32: the composition fractions and n / n_max of each composition (R's last
    two blocks, exactly as featurisation writes them)."""
    out = torch.zeros((len(comps), N_ELEMENTS + 1), dtype=torch.float64)
    for i, comp in enumerate(comps):
        n = sum(comp.values())
        if not 1 <= n <= n_max:
            raise ValueError(f"composition {i} has {n} atoms; this model holds 1..{n_max} atoms per cell")
        for z, c in comp.items():
            if not 1 <= z <= N_ELEMENTS:
                raise ValueError(
                    f"composition {i}: Z = {z} is outside the composition block (1..{N_ELEMENTS})"
                )
            out[i, z - 1] = c / n
        out[i, N_ELEMENTS] = n / n_max
    return out.float()


class CompositionModel(nn.Module):
    """Autoregressive GRU over ``E1 c1 E2 c2 ... STOP`` (see the module docstring).

    Args:
        elements: the vocabulary, atomic numbers (sorted; the training set's elements).
        n_max: the largest number of atoms per cell.
        embed: token embedding width. hidden: GRU width. layers: GRU layers.
    """

    def __init__(
        self, elements: Sequence[int], n_max: int, *, embed: int = 64, hidden: int = 256, layers: int = 1
    ) -> None:
        super().__init__()
        elements = sorted(int(z) for z in set(elements))
        if not elements or n_max < 1:
            raise ValueError("CompositionModel needs at least one element and n_max >= 1")
        self.elements, self.n_max = elements, int(n_max)
        self.spec = {
            "elements": elements,
            "n_max": int(n_max),
            "embed": embed,
            "hidden": hidden,
            "layers": layers,
        }
        E = len(elements)
        # token ids: 0 BOS, 1..E elements, E+1..E+n_max counts, E+n_max+1 STOP
        self.n_tokens = E + self.n_max + 2
        self.stop = self.n_tokens - 1
        self.emb = nn.Embedding(self.n_tokens, embed)
        self.gru = nn.GRU(embed, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, self.n_tokens)
        self._z_index = {z: i + 1 for i, z in enumerate(elements)}

    # ---------------------------------------------------------------------------------------- tokens
    def encode(self, comp: Mapping[int, int]) -> list[int]:
        toks = [0]
        for z in sorted(comp):
            if z not in self._z_index:
                raise ValueError(f"element Z = {z} is not in this model's vocabulary")
            c = int(comp[z])
            if not 1 <= c <= self.n_max:
                raise ValueError(f"count {c} of Z = {z} is outside 1..{self.n_max}")
            toks += [self._z_index[z], len(self.elements) + c]
        return toks + [self.stop]

    def _mask(
        self, last_tok: torch.Tensor, last_el: torch.Tensor, total: torch.Tensor, allowed
    ) -> torch.Tensor:
        """[B, n_tokens] bool: which tokens may follow. last_tok: the previous token; last_el: index (1..E)
        of the last element placed (0: none); total: atoms placed so far; allowed: [E + 1] bool or None."""
        E, B = len(self.elements), last_tok.shape[0]
        mask = torch.zeros((B, self.n_tokens), dtype=torch.bool, device=last_tok.device)
        after_el = (last_tok >= 1) & (last_tok <= E)
        el_ids = torch.arange(1, E + 1, device=last_tok.device)
        # elements: after BOS or a count, larger index than the last, and room for >= 1 atom
        can_el = (~after_el)[:, None] & (el_ids[None] > last_el[:, None]) & (total < self.n_max)[:, None]
        if allowed is not None:
            can_el = can_el & allowed[1:][None]
        mask[:, 1 : E + 1] = can_el
        counts = torch.arange(1, self.n_max + 1, device=last_tok.device)
        mask[:, E + 1 : E + 1 + self.n_max] = after_el[:, None] & (
            counts[None] <= (self.n_max - total)[:, None]
        )
        mask[:, self.stop] = (~after_el) & (last_el > 0)
        return mask

    def _grammar_masks(self, toks: torch.Tensor) -> torch.Tensor:
        """[B, S-1, n_tokens] masks for predicting toks[:, 1:] from each prefix (teacher forcing)."""
        E = len(self.elements)
        B, S = toks.shape
        last_el = torch.zeros(B, dtype=torch.long)
        total = torch.zeros(B, dtype=torch.long)
        masks = []
        for s in range(S - 1):
            t = toks[:, s]
            is_el = (t >= 1) & (t <= E)
            last_el = torch.where(is_el, t, last_el)
            is_count = (t > E) & (t < self.stop)
            total = total + torch.where(is_count, t - E, torch.zeros_like(t))
            masks.append(self._mask(t, last_el, total, None))
        return torch.stack(masks, dim=1)

    # ---------------------------------------------------------------------------------------- training
    def tokenize(self, comps: Sequence[Mapping[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(token sequences [M, S] padded with STOP, their lengths [M]) of compositions."""
        seqs = [self.encode(c) for c in comps]
        toks = torch.full((len(seqs), max(len(s) for s in seqs)), self.stop, dtype=torch.long)
        for i, s in enumerate(seqs):
            toks[i, : len(s)] = torch.tensor(s)
        return toks, torch.tensor([len(s) for s in seqs])

    def _log_prob(self, toks: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """[B] log-likelihood of padded token sequences under the grammar-masked model."""
        h, _ = self.gru(self.emb(toks[:, :-1]))
        logits = self.head(h).masked_fill(~self._grammar_masks(toks), -math.inf)
        lp = F.log_softmax(logits, dim=-1).gather(-1, toks[:, 1:, None])[..., 0]
        valid = torch.arange(toks.shape[1] - 1)[None] < (lengths - 1)[:, None]
        return torch.where(valid, lp, torch.zeros_like(lp)).sum(dim=1)

    def nll(self, toks: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood per composition of padded token sequences [B, S] (pad = STOP)."""
        return -self._log_prob(toks, lengths).mean()

    @torch.no_grad()
    def log_prob(self, comps: Sequence[Mapping[int, int]]) -> torch.Tensor:
        """[M] float64: log p(composition) of each (ValueError for an element outside the vocabulary)."""
        return self._log_prob(*self.tokenize(comps)).double()

    # ---------------------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        temperature: float = 1.0,
        allowed_elements: Iterable[int] | None = None,
        require_all: bool = False,
        max_tries: int = 50,
    ) -> list[Composition]:
        """n compositions (Z -> count), every one summing to <= n_max atoms over the vocabulary.

        allowed_elements: restrict to these Z (a chemical system; ValueError when none is in the vocabulary).
        require_all: with allowed_elements, keep only compositions holding every one of them (redrawn up to
        max_tries rounds; RuntimeError when the model gives none).
        """
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        allowed = None
        want: set[int] = set()
        if allowed_elements is not None:
            want = {int(z) for z in allowed_elements}
            unknown = sorted(want - set(self.elements))
            if unknown:
                raise ValueError(
                    f"element(s) Z = {unknown} never appear in this model's training data "
                    f"(its vocabulary has {len(self.elements)} elements)"
                )
            allowed = torch.zeros(len(self.elements) + 1, dtype=torch.bool)
            for z in want:
                allowed[self._z_index[z]] = True
        out: list[Composition] = []
        for _ in range(max_tries if require_all else 1):
            batch = self._sample_batch(n, generator, temperature, allowed)
            out += [c for c in batch if not require_all or want <= set(c)]
            if len(out) >= n:
                break
        if len(out) < n:
            raise RuntimeError(
                f"the composition model gave {len(out)} of {n} compositions holding all of Z = {sorted(want)} "
                f"in {max_tries} rounds; give the composition with --formula instead"
            )
        return out[:n]

    def _sample_batch(self, n, generator, temperature, allowed) -> list[Composition]:
        E = len(self.elements)
        tok = torch.zeros(n, dtype=torch.long)
        last_el = torch.zeros(n, dtype=torch.long)
        total = torch.zeros(n, dtype=torch.long)
        done = torch.zeros(n, dtype=torch.bool)
        comps: list[Composition] = [{} for _ in range(n)]
        h = None
        for _ in range(2 * min(self.n_max, E) + 1):
            o, h = self.gru(self.emb(tok)[:, None], h)
            logits = self.head(o[:, 0]) / temperature
            mask = self._mask(tok, last_el, total, allowed)
            mask[done] = False
            mask[done, self.stop] = True
            stuck = ~mask.any(dim=1)  # a system whose elements are all used up: stop
            mask[stuck, self.stop] = True
            probs = F.softmax(logits.masked_fill(~mask, -math.inf), dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator)[:, 0]
            is_count = (nxt > E) & (nxt < self.stop)
            for i in torch.nonzero(is_count & ~done).flatten().tolist():
                comps[i][self.elements[int(last_el[i]) - 1]] = int(nxt[i]) - E
            total = total + torch.where(is_count, nxt - E, torch.zeros_like(nxt))
            is_el = (nxt >= 1) & (nxt <= E)
            last_el = torch.where(is_el, nxt, last_el)
            done = done | (nxt == self.stop)
            tok = nxt
            if bool(done.all()):
                break
        return comps

    # ---------------------------------------------------------------------------------------- storage
    def to_dict(self) -> dict:
        return {"spec": dict(self.spec), "state": {k: v.detach().cpu() for k, v in self.state_dict().items()}}

    @classmethod
    def from_dict(cls, d: Mapping) -> CompositionModel:
        s = d["spec"]
        m = cls(s["elements"], s["n_max"], embed=s["embed"], hidden=s["hidden"], layers=s["layers"])
        m.load_state_dict(d["state"])
        return m.eval()


def fit_composition_model(
    comps: Sequence[Mapping[int, int]],
    n_max: int,
    *,
    epochs: int = 40,
    batch_size: int = 256,
    lr: float = 3e-3,
    seed: int = 0,
    holdout: float = 0.05,
    log=None,
) -> tuple[CompositionModel, dict]:
    """Fit a :class:`CompositionModel` on training compositions by maximum likelihood.

    A seeded ``holdout`` fraction is kept out to choose the epoch (the weights of the epoch with the
    lowest held-out NLL are returned). Returns (model, report) with the NLLs (nats per composition).
    """
    if not comps:
        raise ValueError("no compositions to fit")
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CompositionModel(sorted({z for c in comps for z in c}), n_max)
    toks, lengths = model.tokenize(comps)
    perm = torch.randperm(len(toks), generator=g)
    n_hold = int(round(holdout * len(toks))) if len(toks) >= 40 else 0
    hold, train = perm[:n_hold], perm[n_hold:]
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    best, best_state, history = math.inf, None, []
    for epoch in range(epochs):
        model.train()
        order = train[torch.randperm(len(train), generator=g)]
        tot = 0.0
        for k in range(0, len(order), batch_size):
            idx = order[k : k + batch_size]
            loss = model.nll(toks[idx], lengths[idx])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            tot += float(loss.detach()) * len(idx)
        model.eval()
        with torch.no_grad():
            h_nll = float(model.nll(toks[hold], lengths[hold])) if n_hold else tot / len(train)
        history.append({"epoch": epoch + 1, "train_nll": tot / len(train), "holdout_nll": h_nll})
        if log:
            log(f"composition model: epoch {epoch + 1} train NLL {tot / len(train):.4f} held-out {h_nll:.4f}")
        if h_nll < best:
            best, best_state = h_nll, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    model.eval()
    report = {
        "n": len(toks),
        "n_holdout": int(n_hold),
        "best_holdout_nll": best,
        "epochs": epochs,
        "history": history,
        "vocabulary": len(model.elements),
    }
    return model, report


# ------------------------------------------------------------------------------------------------
# What srd-sample asks for: a formula, a chemical system, or the model's own compositions
# ------------------------------------------------------------------------------------------------
def parse_formula(formula: str) -> dict[int, float]:
    """Z -> amount of a formula (pymatgen's parser; ValueError naming the formula when it does not parse)."""
    from pymatgen.core import Composition as PmgComposition

    try:
        comp = PmgComposition(formula)
    except Exception as err:  # pymatgen raises several types for bad formulas
        raise ValueError(f"--formula {formula!r} is not a chemical formula ({err})") from None
    if not len(comp):
        raise ValueError(f"--formula {formula!r} holds no element")
    out = {}
    for el, amt in comp.items():
        try:
            z = int(el.Z)
        except Exception:
            z = -1
        if not 1 <= z <= 118 or type(el).__name__ == "DummySpecies":
            raise ValueError(f"--formula {formula!r} is not a chemical formula ({el} is not an element)")
        out[z] = float(amt)
    return out


def formula_compositions(
    model: CompositionModel | None,
    formula: str,
    n: int,
    *,
    n_max: int,
    formula_units: int | None = None,
    vocabulary: Sequence[int] | None = None,
) -> list[Composition]:
    """n cell compositions for ``formula``: its reduced formula times ``formula_units`` K, or, without K,
    the K that fit in n_max atoms in proportion to the composition model's p(composition) (uniform over
    them without a model), stratified: K gets the largest-remainder share of n under those probabilities,
    the most probable K first (deterministic: no random draw).

    ValueError, with the numbers, for non-integer amounts, elements outside ``vocabulary`` (the training
    elements; default the model's) and cells beyond n_max atoms.
    """
    amounts = parse_formula(formula)
    if any(abs(a - round(a)) > 1e-8 for a in amounts.values()):
        raise ValueError(f"--formula {formula!r} has non-integer amounts; give whole numbers of atoms")
    counts = {z: int(round(a)) for z, a in amounts.items()}
    g = math.gcd(*counts.values())
    reduced = {z: c // g for z, c in counts.items()}
    vocab = set(vocabulary if vocabulary is not None else (model.elements if model is not None else []))
    if vocab:
        from pymatgen.core import Element

        unseen = sorted(z for z in reduced if z not in vocab)
        if unseen:
            names = ", ".join(Element.from_Z(z).symbol for z in unseen)
            raise ValueError(
                f"--formula {formula!r}: {names} never appear(s) in this model's training data, so the model "
                "knows nothing of its structures"
            )
    m = sum(reduced.values())
    if m > n_max:
        raise ValueError(
            f"--formula {formula!r} has {m} atoms per formula unit; this model holds at most n_max = {n_max} "
            "atoms per cell"
        )
    k_max = n_max // m
    if formula_units is not None:
        if formula_units < 1 or formula_units * m > n_max:
            raise ValueError(
                f"--formula-units {formula_units}: {formula_units} x {m} atoms = {formula_units * m}, outside "
                f"1..n_max = {n_max} (at most {k_max} formula units of {formula!r})"
            )
        return [{z: c * formula_units for z, c in reduced.items()} for _ in range(n)]
    options = [{z: c * k for z, c in reduced.items()} for k in range(1, k_max + 1)]
    if model is not None:
        probs = torch.softmax(model.log_prob(options), dim=0)
    else:
        probs = torch.full((len(options),), 1.0 / len(options), dtype=torch.float64)
    # stratified, not drawn: each K gets its largest-remainder share of the n samples, so a size with a
    # modest probability is not missed by chance in a small -n
    from ..representation.decode import largest_remainder

    shares = largest_remainder(probs.double().numpy(), n)
    order = sorted(range(len(options)), key=lambda k: (-float(probs[k]), k))
    return [dict(options[k]) for k in order for _ in range(int(shares[k]))]


def chemical_system_elements(system: str) -> list[int]:
    """'Li-Fe-O' -> [3, 26, 8] (ValueError naming an unknown symbol)."""
    from pymatgen.core import Element

    out = []
    for sym in (s.strip() for s in system.split("-")):
        try:
            out.append(int(Element(sym).Z))
        except ValueError:
            raise ValueError(f"--chemical-system {system!r}: {sym!r} is not an element symbol") from None
    if not out:
        raise ValueError(f"--chemical-system {system!r} names no element")
    return out
