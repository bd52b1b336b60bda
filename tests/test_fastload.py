"""The quick load gives what marshmallow gives, or leaves the body to marshmallow."""

from __future__ import annotations

import copy

import pytest

from schemas import fastload
from schemas.callbacks import KIND_TABLE
from schemas.classify import classify, guess_kind
from tests.helpers import FIXTURES, fixture_json

NAMES = sorted(path.stem for path in FIXTURES.glob("*.json"))
# What a body may carry instead of a usual value: each replaces every value in turn.
ODD_VALUES = [None, "", " ", "x\x00y", "2.5", 7, 2.5, True, 10**30, [], {}, [{"role": "user"}]]


def _schemas(body: dict) -> list:
    kind = KIND_TABLE[guess_kind(body) or "tool"]
    return [kind.schema, kind.intake]


def _marshmallow(schema, body: dict, monkeypatch: pytest.MonkeyPatch) -> object:
    """``schema.load`` with no quick path anywhere (properties included): the reference."""
    with monkeypatch.context() as patch:
        patch.setattr(fastload, "quick_loader", lambda schema: None)
        try:
            return schema.load(copy.deepcopy(body))
        except Exception as exc:  # the quick path must decline whatever marshmallow refuses
            return exc


def _variants(body: dict) -> list[dict]:
    """The body, and the body with each value (top level and under properties) replaced."""
    variants = [body]
    for key in body:
        for odd in ODD_VALUES:
            variants.append({**body, key: odd})
        variants.append({k: v for k, v in body.items() if k != key})
    properties = body.get("properties")
    if isinstance(properties, dict):
        for key in properties:
            for odd in ODD_VALUES:
                variants.append({**body, "properties": {**properties, key: odd}})
            trimmed = {k: v for k, v in properties.items() if k != key}
            variants.append({**body, "properties": trimmed})
    return variants


@pytest.mark.parametrize("name", NAMES)
def test_quick_load_is_marshmallows_or_declines(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    quick_taken = 0
    for body in _variants(fixture_json(name)):
        for schema in _schemas(body) if isinstance(body, dict) else []:
            quick = fastload.quick_loader(schema)
            assert quick is not None, f"{type(schema).__name__} has no quick load"
            loaded = quick(copy.deepcopy(body))
            reference = _marshmallow(schema, body, monkeypatch)
            if loaded is not None:
                quick_taken += 1
                assert loaded == reference, (type(schema).__name__, body)
    assert quick_taken  # the fixture itself, at least, takes the quick path


@pytest.mark.parametrize("name", NAMES)
def test_classify_is_unchanged_by_the_quick_path(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    for body in _variants(fixture_json(name)):
        raw = json.dumps(body).encode()
        for deep in (False, True):
            quick = classify(copy.deepcopy(body), raw, deep=deep)
            with monkeypatch.context() as patch:
                patch.setattr(fastload, "quick_loader", lambda schema: None)
                slow = classify(copy.deepcopy(body), raw, deep=deep)
            assert quick == slow, body


def test_a_schema_beyond_the_plan_always_loads_with_marshmallow() -> None:
    from marshmallow import Schema, fields, validates

    class WithFieldValidator(Schema):
        name = fields.String()

        @validates("name")
        def _check(self, value: str, **kwargs: object) -> None:
            pass

    assert fastload.quick_loader(WithFieldValidator()) is None
    assert fastload.load(WithFieldValidator(), {"name": "a"}) == {"name": "a"}
