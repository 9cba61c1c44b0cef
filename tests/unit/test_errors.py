"""The exception tree: every exception the backbone defines is a BackboneError, and the
drawing in backbone.errors names each one."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import backbone
from backbone import errors

# internal control flow of the validator's checks, never raised past them
INTERNAL = {"backbone.workers.checks.Rejection"}


def _defined_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    root = Path(backbone.__file__).parent
    for path in sorted(root.rglob("*.py")):  # files: backbone.broker has no __init__
        parts = ("backbone", *path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__main__" or "migrations" in parts:
            continue  # the one runs the CLI, the others run Alembic
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        module = importlib.import_module(name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == name:
                found[f"{name}.{value.__qualname__}"] = value
    return found


def test_every_exception_is_a_backbone_error() -> None:
    outside = [
        name
        for name, cls in _defined_exceptions().items()
        if name not in INTERNAL and not issubclass(cls, errors.BackboneError)
    ]
    assert outside == []


def test_the_drawing_names_every_exception() -> None:
    drawing = (errors.__doc__ or "").split()
    missing = [
        cls.__name__
        for name, cls in _defined_exceptions().items()
        if name not in INTERNAL and cls.__name__ not in drawing
    ]
    assert missing == []


def test_agency_errors_stay_value_errors() -> None:
    """pydantic validators turn a ValueError into a validation error."""
    from backbone.agency import AgencyCodeError, PatternError

    assert issubclass(AgencyCodeError, ValueError)
    assert issubclass(PatternError, ValueError)
