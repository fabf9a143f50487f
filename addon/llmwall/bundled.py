"""Where the files llmwall ships live, so that nothing depends on the current directory.

The embedded models are ``models/`` at the root of a checkout; a wheel installs the same
directory as ``llmwall/models`` (pyproject.toml maps it in). Started from any directory,
with the package installed or not, llmwall finds them here.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
#: The embedded classifiers' directory inside a models directory.
LITE = "lite"


def models_dir() -> Path:
    """The models shipped with llmwall: the installed package's, else the checkout's ``models/``."""
    installed = PACKAGE_DIR / "models"
    if (installed / LITE).is_dir():
        return installed
    return PACKAGE_DIR.parent.parent / "models"


def resolve_models(directory: str | None) -> str:
    """A models directory as given (``~`` expanded), or the shipped models when none is given."""
    return os.path.expanduser(directory) if directory else str(models_dir())
