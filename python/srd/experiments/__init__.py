"""Experiments behind the README's claims, runnable from an installed srd (from any folder):

* ``python -m srd.experiments.recon_budget``: match rate versus reconstruction budget (Table 1, "beyond
  the paper").
* ``python -m srd.experiments.decoder_oracle``: real val crystals reconstructed from their own R and
  scored with the generation metrics beside the same crystals unreconstructed (what decoding costs).
* ``python -m srd.experiments.swap_basin``: why "lowest loss wins" picked a wrong structure for Perov-5 test
  crystal 0 (TiOsNOF), and what swap hops change.
* ``python -m srd.experiments.compare_denoisers``: the paper's 1-D U-Net against block-aware denoisers at
  the same small CPU budget.

Each takes ``--help``. Input paths default to the ``data/`` folder of a checkout (relative to the current
folder); pass other paths to run them elsewhere.
"""
