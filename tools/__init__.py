"""Tools that are not the product: benchmark, soak, replica probes and GPU profiles.

Not in the wheel (pyproject packages only `chatterbox_serve` and `deployments`).
"""
