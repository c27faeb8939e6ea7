"""The libraries behind the inspection and measurement commands.

  prediction.py          classify image files (python -m vit_jax.predict)
  attention_maps.py      attention per head and rollout (python -m vit_jax.visualize)
  analysis.py            the paper's Figure 7 panels (python -m vit_jax.analyze)
  linear_fewshot.py      linear few-shot accuracy (python -m vit_jax.fewshot)
  curves.py              training curves of a workdir (python -m vit_jax.plot)
  step_memory.py         what a compiled train step holds (python -m vit_jax.memory)
  benchmarking.py        step speed, MFU (python -m vit_jax.benchmark)
  benchmark_runners.py   the JAX steps the benchmark times
  input_benchmarking.py  input pipeline speed (python -m vit_jax.input_benchmark)
"""
