"""liftlm: make a short-context language model understand a long input by fine-tuning on it (LIFT)."""
from .config import LiftConfig  # noqa: E402
from .errors import LiftError  # noqa: E402
from .version import __version__


def __getattr__(name):  # heavy imports (torch, transformers) only when the API is used
    if name in ("Lift", "Answer", "Internalized"):
        from . import recipe

        return getattr(recipe, name)
    raise AttributeError(name)


__all__ = ["Lift", "LiftConfig", "LiftError", "Answer", "Internalized", "__version__"]
