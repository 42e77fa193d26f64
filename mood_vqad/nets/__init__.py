"""The networks: plain `nn.Module`s built from their config dataclasses (mood_vqad.config).

`vqvae` (2D VQ-VAE with an EMA codebook), `pixelsnail` (the causal prior over code grids) and `vae` (the
(beta-)VAE baseline). They know nothing of files, training, prediction or the command line: this package
imports only `mood_vqad.config`.
"""
