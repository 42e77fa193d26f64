"""Data without the challenge's: `sources` (real volumes inside public packages), `fetch` (download,
check, convert them), `anomalies` (synthetic local anomalies) and `toy` (toy sets in MOOD's layout).
Imports only the base modules.
"""
