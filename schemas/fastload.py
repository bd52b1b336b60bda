"""``schema.load(data)`` for the usual bodies, without marshmallow's per-load machinery.

Marshmallow spends most of a load on its own bookkeeping (an error store, a closure and a
validator chain per field, hook dispatch), about 40-100 µs for a callback: as much as the rest of
the intake's own steps together. For a body that loads cleanly, ``load`` here returns the very
result of ``schema.load`` (tests/test_fastload.py compares them on every fixture and on
mutations of each) in a few microseconds, from a plan compiled once per schema out of the
schema's own declaration: its fields, their ``required`` / ``allow_none`` / ``load_default``,
their validators and their own ``_deserialize``, and the schema's hooks, called as marshmallow
calls them. The schemas stay the one description of every payload.

Anything out of the usual goes to marshmallow whole, so that its result, its errors and their
messages are marshmallow's own: a value a field refuses or converts in an unusual way (a number
sent as a string), a hook that raises, a partial load (the tolerant reader's second pass), and a
schema using what the plan does not model (field-level ``@validates``, ``many``, ``only``...).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from typing import Any

from marshmallow import EXCLUDE, INCLUDE, RAISE, Schema, ValidationError, fields
from marshmallow.utils import missing
from marshmallow.validate import Validator

# A field's converter returns the loaded value, or _DECLINE for "ask marshmallow".
_DECLINE: Any = object()
Convert = Callable[[Any, str, dict[str, Any]], Any]
QuickLoad = Callable[[Any], "dict[str, Any] | None"]


class _NotModelled(Exception):
    """The schema uses something the plan does not model: it always loads with marshmallow."""


def load(schema: Schema, data: Any, partial: Any = None) -> Any:
    """What ``schema.load(data, partial=partial)`` returns (or raises), quicker when it can be."""
    if not partial:
        quick = quick_loader(schema)
        if quick is not None:
            loaded = quick(data)
            if loaded is not None:
                return loaded
    return schema.load(data, partial=partial)


_PLANS: weakref.WeakKeyDictionary[Schema, QuickLoad | None] = weakref.WeakKeyDictionary()


def quick_loader(schema: Schema) -> QuickLoad | None:
    """The compiled quick load of ``schema`` (None: marshmallow always), built on first use."""
    try:
        return _PLANS[schema]
    except KeyError:
        pass
    try:
        plan: QuickLoad | None = _compile(schema)
    except _NotModelled:
        plan = None
    _PLANS[schema] = plan
    return plan


def _compile(schema: Schema) -> QuickLoad:
    if schema.many or schema.partial or schema.only or schema.exclude:
        raise _NotModelled
    unknown = schema.unknown
    if unknown not in (INCLUDE, EXCLUDE, RAISE):
        raise _NotModelled
    hooks = schema._hooks  # marshmallow's registry of the schema's decorated methods
    if hooks.get("validates"):  # field-level @validates: not modelled
        raise _NotModelled
    for tag in ("pre_load", "validates_schema", "post_load"):
        for _name, hook_many, _options in hooks.get(tag, ()):
            if hook_many:
                raise _NotModelled
    pre = _hooks(schema, "pre_load")
    checks = _hooks(schema, "validates_schema")
    post = _hooks(schema, "post_load")
    steps = []
    for attr_name, field in schema.load_fields.items():
        if field.attribute is not None and field.attribute != attr_name:
            raise _NotModelled
        key = field.data_key if field.data_key is not None else attr_name
        steps.append((key, attr_name, _field_step(field)))
    known = frozenset(key for key, _, _ in steps)
    dict_class = schema.dict_class
    kwargs = {"many": False, "partial": schema.partial, "unknown": unknown}

    def quick(data: Any) -> dict[str, Any] | None:
        original = data
        try:
            for hook, pass_original in pre:
                data = hook(data, original, **kwargs) if pass_original else hook(data, **kwargs)
            if type(data) is not dict:
                return None
            result = dict_class()
            for key, attr_name, step in steps:
                value = step(data.get(key, missing), key, data)
                if value is _DECLINE:
                    return None
                if value is not missing:
                    result[attr_name] = value
            if unknown != EXCLUDE:
                for key in data.keys() - known:
                    if unknown == RAISE:
                        return None
                    result[key] = data[key]
            for hook, pass_original in checks:
                if pass_original:
                    hook(result, original, **kwargs)
                else:
                    hook(result, **kwargs)
            for hook, pass_original in post:
                result = (
                    hook(result, original, **kwargs) if pass_original else hook(result, **kwargs)
                )
        except ValidationError:
            return None
        return result

    return quick


def _hooks(schema: Schema, tag: str) -> list[tuple[Callable[..., Any], bool]]:
    return [
        (getattr(schema, name), bool(options.get("pass_original")))
        for name, _many, options in schema._hooks.get(tag, ())
    ]


def _field_step(field: fields.Field) -> Callable[[Any, str, dict[str, Any]], Any]:
    """One field as ``Field.deserialize`` loads it, or _DECLINE where that would raise."""
    if field.pre_load or field.post_load:  # per-field pre/post functions: not modelled
        raise _NotModelled
    convert = _converter(field)
    validators = tuple(field.validators)
    required, allow_none, default = field.required, field.allow_none, field.load_default

    def step(value: Any, key: str, data: dict[str, Any]) -> Any:
        if value is missing:
            if required:
                return _DECLINE
            return default() if callable(default) else default
        if value is None:
            return None if allow_none else _DECLINE
        output = convert(value, key, data)
        if output is _DECLINE:
            return _DECLINE
        for validator in validators:
            # As marshmallow's ``And``: a plain function returning False fails as well.
            if validator(output) is False and not isinstance(validator, Validator):
                return _DECLINE
        return output

    return step


def _converter(field: fields.Field) -> Convert:
    """``field._deserialize`` for the usual values, shortened for marshmallow's own field types
    (exact classes only: a subclass keeps its own ``_deserialize``)."""
    kind = type(field)
    if kind in (fields.String, fields.Str):
        return _string
    if kind is fields.Raw:
        return _raw
    if kind is fields.Float and field.allow_nan is False:
        return _float
    if kind in (fields.Dict, fields.Mapping) and field.value_field is None:
        if field.mapping_type is not dict:
            raise _NotModelled
        key_field = field.key_field
        if key_field is None or (type(key_field) is fields.String and not key_field.validators):
            return _mapping  # JSON keys are strings: a String key field keeps them as they are
        raise _NotModelled
    if kind is fields.Nested:
        return _nested(field)
    if kind is fields.List:
        return _list(field)
    return _own(field)


def _string(value: Any, key: str, data: dict[str, Any]) -> Any:
    return value if type(value) is str else _DECLINE


def _raw(value: Any, key: str, data: dict[str, Any]) -> Any:
    return value


def _float(value: Any, key: str, data: dict[str, Any]) -> Any:
    if type(value) is not float and type(value) is not int:  # bool, str: marshmallow's to judge
        return _DECLINE
    try:
        number = float(value)
    except OverflowError:
        return _DECLINE
    return number if math.isfinite(number) else _DECLINE


def _mapping(value: Any, key: str, data: dict[str, Any]) -> Any:
    return dict(value) if type(value) is dict else _DECLINE


def _nested(field: fields.Nested) -> Convert:
    if field.many or field.only or field.exclude or field.unknown is not None:
        raise _NotModelled
    schema = field.schema
    quick = quick_loader(schema)
    if quick is None:
        raise _NotModelled

    def convert(value: Any, key: str, data: dict[str, Any]) -> Any:
        loaded = quick(value)  # a non-dict value is declined there
        return _DECLINE if loaded is None else loaded

    return convert


def _list(field: fields.List) -> Convert:
    inner = _field_step(field.inner)

    def convert(value: Any, key: str, data: dict[str, Any]) -> Any:
        if type(value) is not list:
            return _DECLINE
        loaded = []
        for item in value:
            output = inner(item, key, data)
            if output is _DECLINE or output is missing:
                return _DECLINE
            loaded.append(output)
        return loaded

    return convert


def _own(field: fields.Field) -> Convert:
    """A field with a ``_deserialize`` of its own (ours: dates, transcripts, tool arguments)."""

    def convert(value: Any, key: str, data: dict[str, Any]) -> Any:
        try:
            return field._deserialize(value, key, data)
        except ValidationError:
            return _DECLINE

    return convert
