"""The performance benchmark: the served app against its engine and against one-at-a-time serving.

Run `python -m tools.bench` from the repository root (`--quick` for a smoke run,
`--out DIR` for the JSON and PNG). It lives under `deployments/` because it starts the
Serve application; the library `chatterbox_serve` stays free of Ray.
"""
