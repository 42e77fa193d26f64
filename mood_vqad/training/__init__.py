"""Training the models on normal volumes, and turning a run into a shipped weights folder.

`cache` (the slice cache `prepare` writes), `augment`, `loop` (the trainer, one process or many),
`tasks` (what one step of each model does; `train vqvae|prior|vae`), `runs` (the run folder),
`calibrate` (thresholds and scales on held-out normals) and `export` (weights folder and model card).
Imports `inference`, `baselines`, `nets` and the base modules; nothing imports training but the CLI.
"""
