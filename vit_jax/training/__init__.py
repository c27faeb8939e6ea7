"""The training loop and what it is made of.

  trainer.py      train_and_evaluate: the loop, resuming, checkpoints, final metrics
  evaluation.py   evaluate_split, evaluate_checkpoint
  steps.py        the pure train and eval steps
  parallel.py     the parallel layout (jit, fsdp, pmap), chosen once
  state.py        TrainState, orbax checkpoints, the workdir's config
  optim.py        the optimizer and learning-rate schedule
  run_plan.py     how long and on which splits a run trains
  reporting.py    progress lines, history.jsonl, TensorBoard
  history.py      the history.jsonl format (its rows; resumed runs' repeats dropped)
  processes.py    multi-host start-up and stop signals (SIGTERM, Ctrl-C)
  host_memory.py  keeping freed host memory (glibc) for the next step
"""
