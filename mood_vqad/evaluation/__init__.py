"""Scoring predictions exactly as the MOOD challenge does: `metrics` (AP, AUROC, Dice from counts),
`evaluate` (a prediction folder against a label folder) and `figures`. Imports only the base modules.
"""
