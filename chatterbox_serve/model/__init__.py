"""Chatterbox model code shared by the engines: T3 in PyTorch and checkpoint loading.

Nothing here is imported by the serving layers at import time; torch loads only when
an engine that needs it starts.
"""
