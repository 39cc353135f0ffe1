"""Probes and benchmarks that need an accelerator (or measure the CPU fallback)."""
