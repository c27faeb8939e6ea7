"""What the vit-jax commands share: quiet logs, flag parsing, checkpoint arguments.

`parse_flags` is absl's parser with `--config` and `--config.<field>` mistakes reported as
`vit_core.errors.run_cli` reports every `UserError`: one `error:` line, exit code 2. The
config file is loaded and every `--config.<field>` checked against it before absl and
ml_collections apply them. `quiet_logs` silences TensorFlow's, absl's and orbax's start-up
and INFO chatter, which would otherwise bury a tool's own output. `add_checkpoint_args` /
`checkpoint_arg` are the model arguments of the inference commands.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import logging
import re
import sys
import traceback
from typing import Any

import ml_collections
from absl import flags
from absl import logging as absl_logging

from vit_core.errors import ConfigError
from vit_jax.weights import pretrained

# Libraries whose INFO lines (orbax's dozens per checkpoint, TensorFlow's) are noise here;
# urllib3 warns once per retried connection (tfds' downloads), before the one error line.
NOISY_LOGGERS = ("absl", "orbax", "tensorflow", "jax._src.distributed", "etils", "urllib3")


class OrbaxFailureFilter(logging.Filter):
    """Drops orbax's own logs of a failed background save (and asyncio's echo of them).

    A save that fails in orbax's threads (a full disk) logs hundreds of traceback lines
    from every thread; the same failure is raised to the training loop, which reports it
    in one line (`vit_core.errors.DiskFullError`).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if "/orbax/" in record.pathname.replace("\\", "/"):
            return record.levelno >= logging.CRITICAL
        if record.name == "asyncio":  # "Future exception was never retrieved"
            text = record.getMessage()
            if record.exc_info:
                text += "".join(traceback.format_exception(*record.exc_info))
            return "/orbax/" not in text and "tensorstore" not in text
        return True


def quiet_logs() -> None:
    """Shows only errors from absl, orbax and TensorFlow (call first in a CLI's `main`).

    Their INFO and WARNING lines (orbax's per checkpoint, tfds' about dataset folders)
    say nothing a user acts on; the tools print what matters themselves.
    """
    absl_logging.set_verbosity(absl_logging.ERROR)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    for name in ("absl", "asyncio"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, OrbaxFailureFilter) for f in logger.filters):
            logger.addFilter(OrbaxFailureFilter())


def unknown_field_error(field: str, argv: list[str], close: str | None) -> ConfigError:
    """The error for `--config.<field>` naming a field the config does not have.

    Args:
      field: the unknown field (its last dotted part, or the whole dotted path).
      argv: the command line, to quote the flag as typed.
      close: the closest existing field, if any.

    Returns:
      The error to raise.
    """
    flag = next((a.split("=")[0] for a in argv if a.startswith("--config.")
                 and (a.split("=")[0] == f"--config.{field}"
                      or a.split("=")[0].endswith("." + field))), f"--config.{field}")
    hint = f"; did you mean {close!r}?" if close else ""
    return ConfigError(f"{flag}: the config has no field {field!r}{hint} (every field is "
                       "listed in configs/default.py)")


def load_config_file(value: str) -> ml_collections.ConfigDict:
    """`get_config()` of a config file, as `config_flags` loads it ("PATH" or "PATH:ARG").

    Args:
      value: the `--config` flag's value.

    Returns:
      The ConfigDict.

    Raises:
      ConfigError: the file does not exist or cannot be read (the OS's reason).
    """
    path, sep, arg = value.partition(":")
    spec = importlib.util.spec_from_file_location("_vit_jax_config_check", path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot load the config file {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except OSError as e:
        raise ConfigError(f"cannot load the config file {path}: {e}") from None
    return module.get_config(arg) if sep else module.get_config()


def config_arguments(argv: list[str]) -> tuple[str | None, list[str]]:
    """The `--config` file and the `--config.<field>` flags of a command line.

    Args:
      argv: `sys.argv` (the program name first).

    Returns:
      (the config flag's value or None, every override flag as typed, without its value).
    """
    config, overrides = None, []
    args = argv[1:]
    for i, arg in enumerate(args):
        if arg == "--":  # absl: what follows is positional
            break
        name = arg.split("=", 1)[0]
        if name in ("--config", "-config"):
            config = arg.split("=", 1)[1] if "=" in arg else (
                args[i + 1] if i + 1 < len(args) else None)
        elif name.startswith(("--config.", "--noconfig.")):
            overrides.append(name)
    return config, overrides


def check_config_overrides(argv: list[str]) -> None:
    """Checks every `--config.<field>` of `argv` against the config file it names.

    Before absl and ml_collections apply the overrides, so that a typo is one line
    naming the flag and the closest field, not ml_collections' traceback.

    Args:
      argv: `sys.argv`.

    Raises:
      ConfigError: the config file cannot be loaded, or an override names a field the
        config does not have.
    """
    path, overrides = config_arguments(argv)
    if path is None:
        return  # absl reports a missing required --config
    config = load_config_file(path)
    for flag in overrides:
        node: Any = config
        for part in flag.split(".", 1)[1].split("."):
            fields = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
            if part not in fields:
                close = difflib.get_close_matches(part, fields, n=1)
                raise unknown_field_error(part, argv, close[0] if close else None)
            node = node[part]


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with mistakes as one 'error:' line and exit code 2.

    Args:
      argv: `sys.argv`.

    Returns:
      The positional arguments left after the flags.
    """
    FLAGS = flags.FLAGS
    try:
        check_config_overrides(argv)
        return FLAGS(argv)
    except ConfigError as e:
        error: Exception = e
    except flags.UnrecognizedFlagError as e:
        if not e.flagname.startswith("config."):
            error = ConfigError(f"unknown flag --{e.flagname} (see --helpfull)")
        else:  # --config.<field> without --config: no field exists
            field = e.flagname.removeprefix("config.")
            known = [n.removeprefix("config.") for n in FLAGS if n.startswith("config.")]
            close = difflib.get_close_matches(field, known, n=1)
            error = unknown_field_error(field, argv, close[0] if close else None)
    except flags.Error as e:  # a missing required flag, a bad value
        if re.match(r"flag --config\.(num_epochs|num_train_steps)=", str(e)):
            # e.g. `--config.num_epochs=None` to make a steps override count: not needed.
            error = ConfigError(f"{e}; a number is needed, and one of --config.num_train_steps "
                                "and --config.num_epochs alone wins over the config file's "
                                "duration")
        else:
            error = ConfigError(f"{e} (see --helpfull)")
    print(f"error: {error}", file=sys.stderr, flush=True)
    sys.exit(2)


def load_config_flag(name: str = "config") -> Any:
    """The ConfigDict of a `config_flags` flag (None if the flag was not given).

    `parse_flags` has already loaded the file and checked the overrides
    (`check_config_overrides`), so what ml_collections loads here is known to be sound.

    Args:
      name: the flag's name.

    Returns:
      The ConfigDict, or None.
    """
    return getattr(flags.FLAGS, name)


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """--checkpoint or --model (one of them, required): the model a command runs.

    Args:
      parser: the command's parser (predict, visualize, analyze, fewshot).
    """
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint",
                       help="a training workdir (python -m vit_jax.train --workdir ...), an "
                            "official-layout .npz file or a timm / Hugging Face model directory")
    which.add_argument("--model", metavar="NAME",
                       help="a released model by name (vit_jax/weights/pretrained.py, e.g. "
                            "vit_base_patch16_224.augreg_in21k_ft_in1k, or hf-hub:ORG/REPO), "
                            "downloaded into $VIT_JAX_CACHE on first use")


def add_checkpoint_args(parser: argparse.ArgumentParser) -> None:
    """--checkpoint or --model, --dataset and --data_dir: the inference commands' model.

    Args:
      parser: the command's parser (predict, visualize).
    """
    add_model_args(parser)
    parser.add_argument("--dataset", default=None,
                        help="tfds dataset whose class names label a .npz model's outputs "
                             "(a workdir knows its own); default: class indices")
    parser.add_argument("--data_dir", default=None,
                        help="tfds data_dir holding that dataset's metadata")


def checkpoint_arg(args: argparse.Namespace) -> str:
    """The checkpoint path `add_model_args` asked for: --checkpoint, or --model's file.

    Args:
      args: parsed arguments with `checkpoint` and `model`.

    Returns:
      A workdir or `.npz` path (a released name is downloaded on first use).

    Raises:
      CheckpointError: an unknown name, or its file cannot be had (one line).
    """
    if args.checkpoint is not None:
        return args.checkpoint
    return pretrained.resolve(args.model)[0]
