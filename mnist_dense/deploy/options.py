"""The command lines of `export` and `serve`: jsonargparse's parser, as LightningCLI's commands have, with `--config`.

`--config FILE` reads a YAML file of the same options (`port: 8080`, `ckpt_path: [a.ckpt, b.ckpt]`, `data.data_dir:
data`); it applies where it stands, so flags after it win. `--print_config` prints the options as such a file.
"""

from __future__ import annotations

import argparse

from jsonargparse import ActionConfigFile, ArgumentParser

CONFIG_HELP = "A YAML file of these options (keys as the flags without --, e.g. `port: 8080`); flags after it win."


def command_parser(prog: str, description: str) -> ArgumentParser:
    parser = ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", action=ActionConfigFile, help=CONFIG_HELP)
    return parser


def parse_flat(parser: ArgumentParser, args: list[str]) -> argparse.Namespace:
    """The options as a flat `argparse.Namespace`, `--data.data_dir` as `data_dir`, without `config`; a bad value
    or file is jsonargparse's one-paragraph error and exit status 2."""
    values = parser.parse_args(args).as_dict()
    values.pop("config", None)
    for key, value in list(values.items()):
        if isinstance(value, dict):  # a dotted flag's group: `data.data_dir` -> data_dir
            values.update(values.pop(key))
    return argparse.Namespace(**values)
