"""Protobuf text format for Triton's ``config.pbtxt``, from plain Python values.

Triton reads ``ModelConfig`` (model_config.proto) as protobuf text. A message is a dict; a
repeated field is a list (of messages or scalars); an enum value is a :class:`Token` (written
bare: ``TYPE_FP32``, ``KIND_CPU``); ``str`` is quoted; ``bool`` is ``true``/``false``::

    render({"name": "denoiser", "max_batch_size": 16,
            "instance_group": [{"count": 1, "kind": Token("KIND_CPU")}]})
"""

from __future__ import annotations

import json
import math


class Token(str):
    """An enum value or other bare identifier (not quoted)."""


def render(message: dict) -> str:
    """The body of a text-format message (the file's contents for a top-level config)."""
    return "".join(_fields(message, 0))


def _fields(message: dict, depth: int) -> list[str]:
    lines = []
    for key, value in message.items():
        if value is None:
            continue
        if isinstance(value, list):
            if value and all(isinstance(v, dict) for v in value):
                lines.append(f"{'  ' * depth}{key} [\n")
                for i, item in enumerate(value):
                    comma = "," if i < len(value) - 1 else ""
                    lines += _message_lines(item, depth + 1, suffix=comma)
                lines.append(f"{'  ' * depth}]\n")
            else:
                items = ", ".join(_scalar(v) for v in value)
                lines.append(f"{'  ' * depth}{key}: [ {items} ]\n")
        elif isinstance(value, dict):
            lines += _message_lines(value, depth, key=key)
        else:
            lines.append(f"{'  ' * depth}{key}: {_scalar(value)}\n")
    return lines


def _message_lines(message: dict, depth: int, *, key: str = "", suffix: str = "") -> list[str]:
    head = f"{'  ' * depth}{key}{': ' if key else ''}{{\n"
    return [head, *_fields(message, depth + 1), f"{'  ' * depth}}}{suffix}\n"]


def _scalar(value) -> str:
    if isinstance(value, Token):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"config values must be finite, got {value!r}")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a double-quoted string with C-style escapes
    raise TypeError(f"cannot write {type(value).__name__} {value!r} in a Triton config")
