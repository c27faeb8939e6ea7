"""Checkpoints: files in and out, released models by name, loading for inference.

  checkpoint.py  parameter trees ⇄ the official .npz, fine-tuning surgery
  pretrained.py  released names → a cached .npz and the options it implies
  download.py    safe, resumable, checksummed downloads into the cache
  hub.py         Hugging Face Hub repositories and timm / HF model directories
  loading.py     a model for inference from a workdir, .npz, model directory or name
  exporting.py   a workdir's checkpoint as an official .npz, timm state dict or HF directory
"""
