"""The VAE / beta-VAE baselines of Zimmerer et al.: per-slice localisation maps and their detector.

`maps` (reconstruction, ELBO / KL gradients, combi, energy projection) and `detector` (the VAE family's
detector with the restoration detector's interface). Builds on `inference` and `nets`.
"""
