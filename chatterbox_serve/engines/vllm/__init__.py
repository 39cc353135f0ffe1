"""The vLLM engine: T3 on vLLM, S3Gen in PyTorch. `engine.VLLMEngine` is the entry point."""
