"""Generation, end to end: sample representation vectors from a trained model, decode them, and
reconstruct them into crystals (what srd-sample runs; SPEC sections 4 and 3).

Writes OUT/representations.pt (the sampled vectors, reused by a rerun with the same key), then the
reconstruction job's folder (cifs/, results.csv, eval_gen.pt, summary.json), resumable.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from .reconstruction import ReconItem, ReconstructConfig, run_job
from .representation import Features, Rejected, decode
from .utils import check_output_dir, read_json, resolve_device, run_metadata, sha256_file, write_json

__all__ = ["sample_crystals"]

#: The reconstruction budget srd-sample uses when none is given (a name of srd.reconstruction.PRESETS).
DEFAULT_BUDGET = "gen"


def _training_templates(meta: dict, show_progress: bool):
    """The template library of the model's own training files (a pretrained model's ``templates``, else the
    run's config ``data``), or None when they are not here (the template trials then start uniformly;
    srd-reconstruct warns)."""
    from .pretrained import resolve_data_path

    wanted = meta.get("templates") or [getattr(meta.get("train_config"), "data", None)]
    files = [resolve_data_path(str(d)) for d in wanted if d and str(d).endswith((".csv", ".csv.gz"))]
    if not files or any(f is None for f in files):
        if show_progress and meta.get("templates"):
            print(f"srd-sample: warning: the template files {wanted} are not here; uniform starts instead")
        return None
    from .reconstruction.templates import TemplateLibrary

    if show_progress:
        print(
            f"srd-sample: template trials start from the model's training crystals, {', '.join(map(str, files))}"
        )
    return TemplateLibrary.from_files(files, show_progress=show_progress)


def _check_vocabulary(meta: dict, compositions) -> None:
    """ValueError naming the first composition with an element the model never saw or too many atoms."""
    from pymatgen.core import Element

    from .diffusion import load_composition_model

    cmodel = load_composition_model(meta)
    vocab = set(cmodel.elements) if cmodel is not None else None
    n_max = int(meta["n_max"])
    for i, comp in enumerate(compositions):
        n = sum(comp.values())
        if n > n_max:
            raise ValueError(f"composition {i} has {n} atoms; this model holds at most n_max = {n_max}")
        if vocab is not None and not set(comp) <= vocab:
            bad = ", ".join(Element.from_Z(int(z)).symbol for z in sorted(set(comp) - vocab))
            raise ValueError(f"composition {i}: {bad} never appear(s) in this model's training data")


def _requested_compositions(loaded, n, seed, formula, formula_units, chemical_system, temperature):
    """The compositions srd-sample was asked for (None: the model's own draw, or an unconditional model)."""
    from .diffusion import load_composition_model
    from .diffusion.composition import chemical_system_elements, formula_compositions

    diffusion, meta = loaded
    if formula is None and chemical_system is None:
        if formula_units is not None:
            raise ValueError("--formula-units needs --formula")
        return None
    if formula is not None and chemical_system is not None:
        raise ValueError("give --formula or --chemical-system, not both")
    if not diffusion.conditional:
        raise ValueError(
            f"{meta['path']}: this model was trained without conditioning (diffusion.condition = none), so it "
            "cannot take --formula / --chemical-system; use a *_cond config or --pretrained"
        )
    cmodel = load_composition_model(meta)
    if formula is not None:
        return formula_compositions(cmodel, formula, n, n_max=int(meta["n_max"]), formula_units=formula_units)
    g = torch.Generator().manual_seed(int(seed) + 7919)
    return cmodel.sample(
        n,
        generator=g,
        temperature=temperature,
        allowed_elements=chemical_system_elements(chemical_system),
        require_all=True,
    )


def sample_crystals(
    checkpoint: str | Path,
    num_samples: int,
    output: str | Path,
    *,
    config: ReconstructConfig | None = None,
    composition: str = "largest-remainder",
    sampling_steps: int | None = None,
    eta: float | None = None,
    use_ema: bool = True,
    batch_size: int = 256,
    seed: int = 0,
    device="auto",
    reconstruct: bool = True,
    recon_batch_size: int = 64,
    show_progress: bool = True,
    templates=None,
    formula: str | None = None,
    formula_units: int | None = None,
    chemical_system: str | None = None,
    guidance: float = 1.0,
    composition_temperature: float = 1.0,
    compositions: list[dict[int, int]] | None = None,
) -> dict:
    """srd-sample as a function: sample ``num_samples`` R vectors from ``checkpoint`` (a RUN folder or its
    checkpoint.pt), decode them with ``composition`` and (with ``reconstruct``) reconstruct them with
    ``config`` (default: ``ReconstructConfig.preset(DEFAULT_BUDGET, seed=seed)``) into ``output``.

    Rerunning with the same ``output`` reuses the samples and resumes the reconstruction. ``templates``
    (a TemplateLibrary) feeds ``config.template_trials``; by default, the model's training file when it is a
    CSV that exists here.

    A conditional (factored) model draws each crystal's composition from its composition model, or takes
    it from ``formula`` (with ``formula_units`` K, or K drawn by the composition model), or draws it within
    ``chemical_system`` ("Li-Fe-O": compositions of those elements only, each holding all of them);
    ``guidance`` is the classifier-free guidance scale. ``compositions`` (one Z -> count dict per sample)
    gives every crystal's composition explicitly (structure prediction, ``srd-sample --compositions-from``).

    Returns:
        The summary written to ``output``/summary.json (its "sampling" entry: the diffusion side).
    """
    from collections import Counter

    from .diffusion import load_checkpoint, sample_representations

    config = config or ReconstructConfig.preset(DEFAULT_BUDGET, seed=seed)
    device = resolve_device(device) if isinstance(device, str | None) else device
    out = check_output_dir(output, flag="-o/--output")
    ckpt = Path(checkpoint)
    ckpt_file = ckpt / "checkpoint.pt" if ckpt.is_dir() else ckpt
    loaded = load_checkpoint(ckpt_file, device=device)
    meta = loaded[1]
    if templates is None and config.template_trials > 0 and reconstruct:
        templates = _training_templates(meta, show_progress)
    if compositions is not None:
        if formula is not None or chemical_system is not None:
            raise ValueError("give compositions, a formula or a chemical system, not two of them")
        if len(compositions) != num_samples:
            raise ValueError(f"{len(compositions)} compositions for {num_samples} samples")
        if not loaded[0].conditional:
            raise ValueError(f"{ckpt_file}: an unconditional model cannot take compositions")
        _check_vocabulary(loaded[1], compositions)
        compositions = [{int(z): int(c) for z, c in comp.items()} for comp in compositions]
    else:
        compositions = _requested_compositions(
            loaded, num_samples, seed, formula, formula_units, chemical_system, composition_temperature
        )
    sample_key = {
        "checkpoint_sha256": sha256_file(ckpt_file),
        "n": num_samples,
        "seed": seed,
        "sampling_steps": sampling_steps,
        "eta": eta,
        "ema": use_ema,
        "batch_size": batch_size,
    }
    if compositions is not None:
        import hashlib
        import json

        text = json.dumps([sorted(c.items()) for c in compositions])
        sample_key["compositions_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    if loaded[0].conditional:
        sample_key.update(
            formula=formula,
            formula_units=formula_units,
            chemical_system=chemical_system,
            guidance=guidance,
            composition_temperature=composition_temperature,
        )
    reps_path = out / "representations.pt"
    key_path = out / "sampling.json"
    if reps_path.is_file() and key_path.is_file() and read_json(key_path).get("key") == sample_key:
        feats = Features.load(reps_path)
        t_diffusion = float(read_json(key_path).get("seconds", 0.0))
        if show_progress:
            print(f"srd-sample: reusing the {len(feats.ids)} samples in {reps_path}")
    else:
        t0 = time.perf_counter()
        R = sample_representations(
            loaded,
            num_samples,
            sampling_steps=sampling_steps,
            eta=eta,
            batch_size=batch_size,
            seed=seed,
            device=device,
            use_ema=use_ema,
            progress=show_progress,
            compositions=compositions,
            guidance=guidance,
            composition_temperature=composition_temperature,
        )
        t_diffusion = time.perf_counter() - t0
        bad = ~torch.isfinite(R).all(dim=1)
        if bool(bad.any()):
            raise ValueError(
                f"the model in {ckpt_file} produced non-finite vectors for {int(bad.sum())} of {len(R)} samples "
                f"(first: sample {int(torch.nonzero(bad)[0, 0])}); the checkpoint's weights are finite, so the "
                "sampler diverged: try --sampling-steps with more steps or the EMA weights"
            )
        feats = Features(
            R,
            [f"gen_{k:06d}" for k in range(len(R))],
            meta["scaling_stats"],
            int(meta["n_max"]),
            meta["ead_params"],
            meta.get("dataset") or None,
            source={"checkpoint": str(ckpt_file), "sampled": True},
        )
        feats.save(reps_path)
        write_json(key_path, {"key": sample_key, "seconds": t_diffusion, **run_metadata()})

    decoded = decode(feats.R.double(), feats.stats, feats.n_max, composition)
    items = [
        ReconItem(i, None, d.reason) if isinstance(d, Rejected) else ReconItem(i, d)
        for i, d in zip(feats.ids, decoded)
    ]
    n_rej = sum(it.target is None for it in items)
    sampling = {
        "checkpoint": str(ckpt_file),
        "dataset": feats.dataset,
        "n_samples": len(items),
        "sampling_steps": sampling_steps or int(meta["train_config"].diffusion.timesteps),
        "composition_decoding": composition,
        "rejected_at_decoding": n_rej,
        "seconds_diffusion_total": round(t_diffusion, 3),
        "seconds_diffusion_per_crystal": round(t_diffusion / max(len(items), 1), 5),
        "device": str(device),
    }
    if not reconstruct:
        summary = {
            "sampling": sampling,
            "rejection_reasons": dict(Counter(it.reason for it in items if it.target is None)),
            **run_metadata(),
        }
        write_json(out / "summary.json", summary)
        return summary
    return run_job(
        items,
        out,
        config=config,
        params=feats.params,
        input_desc={
            "path": str(reps_path.resolve()),
            "kind": "generated",
            "composition": composition,
            **sample_key,
        },
        batch_size=recon_batch_size,
        device=device,
        gen_mode=True,
        show_progress=show_progress,
        extra_summary={"sampling": sampling},
        templates=templates,
    )
