"""Cross-framework proof: the Flax ViT (`vit_jax`) and its PyTorch twin (`vit_torch`)
compute the same function, train the same way and share one bit-exact `.npz` format.

`pytest parity/` asserts it (bounds in `parity.harness` / `parity.training`);
`python -m parity [--markdown FILE]` prints the measured differences per variant. Both use
the same code: `parity.cases` (what is compared), `parity.weights` (models, random
weights, npz transfer both ways), `parity.harness` (bounds, forward, resize, bfloat16)
and `parity.training` (gradients, optimizer steps).
"""
