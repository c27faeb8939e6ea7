"""vit_jax/cli.py in-process: `--config.<field>` checked against the config file it names.

The same messages through the real command lines are pinned in tests/test_cli_errors.py
(subprocesses, slow); these call the check directly and take milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vit_core.errors import ConfigError
from vit_jax import cli

DIGITS = str(Path(__file__).resolve().parents[1] / "configs" / "digits.py")


@pytest.mark.parametrize("config_flag", [["--config", DIGITS], [f"--config={DIGITS}"]])
@pytest.mark.parametrize("flag, message", [
    ("--config.bach_size=3",
     "--config.bach_size: the config has no field 'bach_size'; did you mean 'batch_size'? "
     "(every field is listed in configs/default.py)"),
    ("--config.model.varient=B/16",
     "--config.model.varient: the config has no field 'varient'; did you mean 'variant'? "
     "(every field is listed in configs/default.py)"),
    ("--config.batch_size.x=3",  # a number has no fields
     "--config.batch_size.x: the config has no field 'x' (every field is listed in "
     "configs/default.py)"),
])
def test_unknown_fields_name_the_flag_and_the_closest_field(config_flag, flag, message):
    with pytest.raises(ConfigError) as e:
        cli.check_config_overrides(["train", *config_flag, "--workdir", "w", flag])
    assert str(e.value) == message


def test_existing_fields_pass_in_every_spelling():
    cli.check_config_overrides(["train", "--config", DIGITS, "--config.model.variant=S/16",
                                "--config.batch_size", "8", "--noconfig.model.scan",
                                "--config.fewshot.every_steps=5"])


def test_a_config_file_that_cannot_be_loaded_names_the_file_and_the_os_reason(tmp_path):
    missing = str(tmp_path / "no_such.py")
    with pytest.raises(ConfigError) as e:
        cli.check_config_overrides(["train", "--config", missing, "--config.batch_size=3"])
    assert str(e.value) == (f"cannot load the config file {missing}: [Errno 2] No such file "
                            f"or directory: {missing!r}")


def test_the_config_argument_and_the_overrides_are_read_off_the_command_line():
    argv = ["train", "--config", "c.py:arg", "--config.a.b=1", "--noconfig.c", "--", "--config.d"]
    assert cli.config_arguments(argv) == ("c.py:arg", ["--config.a.b", "--noconfig.c"])
    assert cli.config_arguments(["evaluate", "--checkpoint", "w"]) == (None, [])
    cli.check_config_overrides(["evaluate", "--checkpoint", "w"])  # no config: nothing to check
