"""Scoring one volume with loaded weights: the latent-space restoration detector and what it is made of.

`slicing` (normalisation, slices in and maps back to the volume), `scores` (NLL and residual scores, the
post-filter), `restore` (resampling unlikely codes from the prior), `weights` (the weights folder),
`detector` (one region's VQ-VAE + prior scoring a volume) and `timing` (per-stage seconds for benchmarks).
Imports `nets` and the package's base modules (config, io); never training, evaluation or the CLI.
"""
