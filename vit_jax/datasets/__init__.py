"""Datasets this project defines itself, for `vit_jax.dataset_info`.

  digits.py  the bundled "digits" tfds builder (registered with tfds when imported)
  folder.py  "folder:PATH": a folder of your own images, on tfds' ImageFolder

Import the module you need (`from vit_jax.datasets import digits`); this file imports
nothing, so that importing one does not load the other.
"""
