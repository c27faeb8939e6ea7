"""tfds builders for the datasets this project defines itself.

Importing the package registers them with tfds (a builder registers on class creation);
`vit_jax.input_pipeline` imports it, so `tfds.builder("digits")` works after that.
"""

from vit_jax.datasets import digits

__all__ = ["digits"]
