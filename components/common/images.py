"""Image references of the pipeline's components, from one place (the settings)."""

from __future__ import annotations

from components.common.settings import Settings

IMAGE_NAMES = ("spark", "train", "serve")


def image(name: str, settings: Settings | None = None) -> str:
    """``<IMAGE_REGISTRY>/<name>:<IMAGE_TAG>`` for one of the project's images."""
    if name not in IMAGE_NAMES:
        raise ValueError(f"unknown image {name!r}; one of: {', '.join(IMAGE_NAMES)}")
    return (settings or Settings.from_env()).image(name)
