"""liftlm's version: a leaf that anything may import (the package's ``__init__`` re-exports it)."""
__version__ = "0.1.0"
