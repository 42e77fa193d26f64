"""How calibration turns held-out per-code NLL into the restoration threshold, and rules that keep it on.

"percentile" (the shipped weights' rule) takes a percentile of the pooled NLL. On subjects it has not
seen, an overfit prior finds almost every code unlikely, the percentile rises (14.5 nats for the shipped
brain weights, where a prior that knows nothing gives ln 128 = 4.85) and restoration stops firing where it
should: the pixel map becomes the plain reconstruction error. "uniform-cap" caps the percentile at the NLL
of the uniform distribution over the codebook, ln K: a code the prior rates less likely than chance is
unlikely by any standard, so it is always restored, whatever the held-out NLL looks like. (The authors'
5 nats for 128 codes is about ln 128.)
"""

from __future__ import annotations

import math

import numpy as np

from mood_vqad.config import RESTORE_RULES


def uniform_nll(num_codes: int) -> float:
    """The per-code NLL in nats of a prior that spreads its mass evenly over the codebook: ln K."""
    return math.log(num_codes)


def restore_threshold(pooled_nll: np.ndarray, percentile: float, rule: str, num_codes: int) -> float:
    """The restoration threshold (nats) of a rule from the pooled per-code NLL of held-out volumes."""
    if rule not in RESTORE_RULES:
        raise ValueError(f"restore rule must be one of {', '.join(RESTORE_RULES)}; got {rule!r}")
    value = float(np.percentile(pooled_nll, percentile))
    return min(value, uniform_nll(num_codes)) if rule == "uniform-cap" else value
