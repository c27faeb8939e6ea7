"""Evaluate a trained model: `python -m vit_jax.evaluate --checkpoint CKPT [--config CFG]`.

CKPT is a training workdir (its `config.json` and latest orbax checkpoint) or an
official-layout `.npz` (a released checkpoint or one written by `save_npz`), whose
architecture is read off the array shapes; `--model NAME` instead takes a released model
by name (`vit_jax.weights.pretrained`, downloaded into the cache on first use). The work is
`vit_jax.training.evaluation.evaluate_model`.
"""

from __future__ import annotations

import json

from absl import app, flags
from ml_collections import config_flags

from vit_core.errors import run_cli
from vit_jax import cli


def main(argv: list[str]) -> None:
    """The body of `python -m vit_jax.evaluate` (flags already parsed).

    Args:
      argv: positional arguments (none are taken).
    """
    del argv
    # The library loads once the flags are good: a flag mistake answers at once.
    from vit_jax.training import evaluation, run_plan

    cli.quiet_logs()

    def run() -> None:
        FLAGS = flags.FLAGS
        config = cli.load_config_flag()
        origin = None if config is None else run_plan.Origin.from_flag(FLAGS["config"])
        results = evaluation.evaluate_model(FLAGS.checkpoint, FLAGS.model, config, origin)
        for split, r in results.items():
            print(f"{split}: top-1 {r['top1']:.4f}  top-5 {r['top5']:.4f}  loss {r['loss']:.4f}"
                  f"  ({r['num_examples']} images)")
        print(json.dumps(results))

    run_cli(run)


if __name__ == "__main__":
    config_flags.DEFINE_config_file("config", None, "Config file: dataset and splits to "
                                    "evaluate (default: the workdir's own config).")
    flags.DEFINE_string("checkpoint", None, "A training workdir or an official .npz file.")
    flags.DEFINE_string("model", None, "Or a released model by name "
                        "(vit_jax/weights/pretrained.py, or hf-hub:ORG/REPO), downloaded into "
                        "$VIT_JAX_CACHE on first use.")
    app.run(main, flags_parser=cli.parse_flags)
