"""Chatterbox Turbo: a GPT-2 T3 without CFG, and S3Gen's meanflow decoder in 2 steps.

Semantics follow resemble-ai/chatterbox 0.1.7 (`ChatterboxTurboTTS`,
`T3.inference_turbo`, `S3Gen(meanflow=True)`); tests/model/test_turbo_upstream.py checks
this token for token, and the waveform within a stated bound, against that package.
Modules:

- `config`: hyperparameters (`TurboConfig`, `GPT2Config`), without torch;
- `backbone`: GPT-2 on `scaled_dot_product_attention`, with the original's KV cache;
- `model`: `TurboT3` under upstream's state-dict keys;
- `sampling`: Turbo's chain (temperature, top_k, top_p, then repetition penalty);
- `tokenizer`: GPT-2 BPE from the checkpoint folder, with the paralinguistic tags;
- `checkpoint`: the file layout and loaders;
- `s3gen`: the batched meanflow S3Gen stage (no CFG);
- `voice`: reference audio (more than 5 s, normalised to -27 LUFS) to model inputs;
- `reference`: `TurboModel`, text and a voice to speech tokens and a waveform.

The batched generation loop is the original model's (`t3.generation.generate`) with
Turbo's chain, and the S3Gen stage reuses `s3gen.flow` and `s3gen.vocoder`.
"""
