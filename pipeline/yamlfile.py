"""Reading YAML safely: the safe loader, and a mapping with the same key twice is an error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import UserError


class UniqueKeySafeLoader(yaml.SafeLoader):
    """yaml.SafeLoader that rejects a mapping with the same key twice."""


def _construct_unique_mapping(loader: UniqueKeySafeLoader, node: yaml.MappingNode, deep: bool = False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


UniqueKeySafeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def read_yaml(path: str | Path) -> Any:
    """Parse a YAML file with the safe, duplicate-rejecting loader; errors become UserError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read ({err})") from None
    try:
        return yaml.load(text, Loader=UniqueKeySafeLoader)
    except yaml.YAMLError as err:
        raise UserError(f"{path}: invalid YAML: {' '.join(str(err).split())}") from None
