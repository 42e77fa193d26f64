"""Training the models on normal volumes, and turning a run into a shipped weights folder.

`cache` (the slice cache `prepare` writes), `augment`, `loop` (the trainer, one process or many), `steps`
(what one step of each model does), `tasks` (`train_autoencoder` for the VQ-VAE and the VAE,
`train_prior`), `runs` (the run folder, `load_run` for either family), `calibrate` (one driver, a
calibration per family) and `export` (weights folder and model card of either family).
Imports `predict`, `baselines`, `inference`, `nets` and the base modules; only the CLI imports training.
"""
