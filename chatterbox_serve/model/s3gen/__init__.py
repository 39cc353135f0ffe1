"""S3Gen (speech tokens to waveform) run over padded batches: policy, flow, vocoder, runner."""
