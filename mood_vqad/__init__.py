"""mood-vqad: unsupervised anomaly detection in 3D medical volumes by VQ-VAE latent-space restoration.

Follows Marimont & Tarroni, "Anomaly detection through latent space restoration using vector-quantized
variational autoencoders" (ISBI 2021), the authors' MOOD 2020 entry.
"""

__version__ = "0.1.0"
