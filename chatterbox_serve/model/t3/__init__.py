"""A reference T3 (Chatterbox's text-to-speech-token model) in plain PyTorch.

Semantics follow resemble-ai/chatterbox's `T3.inference` (English and multilingual v2
checkpoints); tests/model checks this token for token against the upstream package.
Modules:

- `config`: hyperparameters (`T3Config`), without torch;
- `conditioning`: speaker projection, perceiver over the prompt speech tokens, emotion;
- `backbone`: the Llama decoder on `scaled_dot_product_attention`, with a KV cache;
- `model`: `T3`, the whole network with upstream's state-dict keys and its embeddings;
- `sampling`: CFG and the sampling chain (repetition penalty, temperature, min_p, top_p);
- `alignment`: the multilingual alignment analyzer that forces or holds stop-of-speech;
- `generation`: the batched generation loop (`generate`), one outcome per item.
"""
