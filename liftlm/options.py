"""Command-line building blocks shared by every verb (``liftlm``, ``liftlm eval``, ``liftlm bench``): the flags
generated from ``LiftConfig`` (one flag per field, its help from the field's metadata), the model flags, and
reading settings back from parsed arguments. A leaf module: it imports nothing of liftlm's but settings and errors,
so every CLI module can import it at the top.
"""
from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path

from .config import MODES, LiftConfig
from .errors import LiftError

__all__ = ["MODES", "add_common", "add_config_flags", "config_from_args", "flag_name", "given_config",
           "given_config_flags", "model_spec", "quiet_libraries", "read_questions"]


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def _field_type(f: dataclasses.Field):
    hint = typing.get_type_hints(LiftConfig)[f.name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and args:
        hint = args[0]
    return hint


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per ``LiftConfig`` field, its help taken from the field's metadata."""
    group = parser.add_argument_group("LIFT settings")
    for f in dataclasses.fields(LiftConfig):
        kind = _field_type(f)
        said = f.default is None and "default" in f.metadata["help"]  # the help says what None stands for
        help_text = f.metadata["help"] + ("" if said else f" (default: {f.default})")
        if kind is bool:
            group.add_argument(flag_name(f.name), dest=f.name, action=argparse.BooleanOptionalAction,
                               default=None, help=help_text)
        else:
            group.add_argument(flag_name(f.name), dest=f.name, type=kind, default=None, metavar=f.name.upper(),
                               help=help_text)


def given_config(args: argparse.Namespace) -> dict:
    """The ``LiftConfig`` fields set on the command line (flags left out are absent)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(LiftConfig)
            if getattr(args, f.name, None) is not None}


def given_config_flags(args: argparse.Namespace) -> list[str]:
    """The ``--flag`` spellings of the ``LiftConfig`` fields set on the command line."""
    return [flag_name(name) for name in given_config(args)]


def config_from_args(args: argparse.Namespace, **defaults) -> LiftConfig:
    """The ``LiftConfig`` of the parsed flags; ``defaults`` replace the dataclass's defaults (not given flags)."""
    return LiftConfig(**{**defaults, **given_config(args)})


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None,
                        help="hub id, local model directory, or .gguf file (default: the embedded "
                             "SmolLM2-135M-Instruct)")
    parser.add_argument("--base", default=None,
                        help="start from a model written by `liftlm sft` (a directory; same as --model DIR)")
    parser.add_argument("--store", default=None,
                        help="adapter store directory (default: $LIFTLM_HOME/adapters, ~/.cache/liftlm/adapters)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: the best available)")
    parser.add_argument("--force", action="store_true", help="train again even if a stored adapter matches")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--qa-file", default=None,
                        help="auxiliary QA pairs to train on instead of generated ones: JSONL with \"question\" "
                             "and \"answer\" (optional \"evidence\", \"start\", \"end\")")
    add_config_flags(parser)


def read_questions(args) -> list[str]:
    if args.question is not None:
        if not args.question.strip():
            raise LiftError("--question is empty; ask something")
        return [args.question]
    path = Path(args.questions_file)
    if not path.is_file():
        raise LiftError(f"--questions-file: no such file: {path}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise LiftError(f"--questions-file: {path} is not UTF-8 text") from None
    questions = [line.strip() for line in lines if line.strip()]
    if not questions:
        raise LiftError(f"--questions-file: {path} holds no questions (one per line)")
    return questions


def model_spec(args) -> str | None:
    if args.base is not None and args.model is not None:
        raise LiftError("give --model or --base, not both (--base is an SFT model directory)")
    if args.base is not None:
        from .sft import SFT_METADATA

        if not (Path(args.base) / SFT_METADATA).is_file():
            raise LiftError(f"--base: {args.base} is not a model written by `liftlm sft`")
        return args.base
    return args.model


def quiet_libraries() -> None:
    """Keep stderr for liftlm's own messages and progress: no library progress bars or advice."""
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module="peft")
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


