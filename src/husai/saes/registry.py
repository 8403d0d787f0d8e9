"""Architectures by name. A new architecture is one file that decorates its class with @register(name)."""

from __future__ import annotations

_REGISTRY: dict[str, type] = {}


def register(name: str):
    def wrap(cls):
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} registered twice")
        _REGISTRY[name] = cls
        return cls

    return wrap


def get_architecture(name: str) -> type:
    if name not in _REGISTRY:
        raise KeyError(f"unknown SAE architecture {name!r}; known: {sorted(_REGISTRY)}")
    return _REGISTRY[name]


def architectures() -> list[str]:
    return sorted(_REGISTRY)
