"""The VAE / beta-VAE baselines (Zhou et al. 2020, predictors of Zimmerer et al. 2019 and Dehaene et al.
2020): `maps` (reconstruction, ELBO / KL gradients, combi, energy projection per slice) and `detector`
(the VAE family's `inference.protocol.Detector`). Imports `inference`, `nets` and the base modules.
"""
