"""Scoring one volume with loaded weights: the detector protocol, the VQ-VAE detector and its parts.

`protocol` (`Detector`: what every family offers prediction, with `settings_from(PredictOptions)`),
`detector` (the VQ-VAE family's: one region's VQ-VAE + prior scoring a volume), `slicing`
(normalisation, slices in and maps back to the volume), `scores` (NLL and residual scores), `restore`
(resampling unlikely codes from the prior), `weights` (the weights folder of any family: one saver and
one loader over {file: module}) and `timing` (per-stage seconds for benchmarks).
Imports `nets` and the base modules (config, io, errors); never baselines, training, evaluation or the CLI.
"""
