"""Named training presets (YAML files in this folder): `uniar train --config ugen-tiny`."""

from __future__ import annotations

from pathlib import Path

from uniar.errors import UserError

FOLDER = Path(__file__).parent


def preset_names() -> list[str]:
    return sorted(p.stem for p in FOLDER.glob("*.yaml"))


def resolve(name_or_path: str) -> Path:
    """A preset name (ugen-tiny) or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise UserError(f"config file not found: {path}")
        return path
    preset = FOLDER / f"{name_or_path}.yaml"
    if not preset.is_file():
        raise UserError(f"unknown preset {name_or_path!r}; presets: {', '.join(preset_names())} "
                        "(or give a path to a .yaml file)")
    return preset
