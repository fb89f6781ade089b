"""Fruit catalog: per-label facts (common name, nutrition per 100 g, storage advice,
sources) for every class the recogniser can predict, read from the bundled
``fruits.json`` and validated on load. See ``SOURCES.md`` for where the figures come from."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

DEFAULT_PATH = Path(__file__).parent / "fruits.json"

_ENTRY_KEYS = frozenset(
    {"label", "common_name", "food", "nutrition_per_100g", "storage_advice", "sources"}
)
# Loose sanity limits per 100 g: no more than 100 g of any component, pure fat is
# ~900 kcal, and even Kakadu plum or dried herbs stay below these vitamin C / potassium caps.
_NUTRIENT_MAX = {
    "energy_kcal": 900.0,
    "water_g": 100.0,
    "sugars_g": 100.0,
    "fibre_g": 100.0,
    "vitamin_c_mg": 6000.0,
    "potassium_mg": 10000.0,
}


@dataclass(frozen=True)
class Nutrition:
    """Nutrients per 100 g of raw edible portion; None where the source gives no figure."""

    energy_kcal: float | None
    water_g: float | None
    sugars_g: float | None
    fibre_g: float | None
    vitamin_c_mg: float | None
    potassium_mg: float | None


@dataclass(frozen=True)
class FruitFacts:
    label: str
    common_name: str
    nutrition: Nutrition
    storage_advice: str
    sources: tuple[str, ...]


def load_catalog(path: Path | None = None) -> dict[str, FruitFacts]:
    """Return the catalog keyed by label; the bundled file is parsed once and cached.

    Raises ValueError, naming the offending entry, if the file is malformed.
    """
    if path is None:
        return dict(_load_default())
    return _load(path)


@cache
def _load_default() -> dict[str, FruitFacts]:
    return _load(DEFAULT_PATH)


def _load(path: Path) -> dict[str, FruitFacts]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(raw, list):
        raise ValueError(f"{path}: expected a JSON array of entries")
    catalog: dict[str, FruitFacts] = {}
    for index, item in enumerate(raw):
        name = f"{path.name} entry {index}"
        if isinstance(item, dict) and isinstance(item.get("label"), str):
            name += f" ({item['label']!r})"
        try:
            facts = _parse_entry(item)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
        if facts.label in catalog:
            raise ValueError(f"{name}: duplicate label")
        catalog[facts.label] = facts
    return catalog


def _parse_entry(item: Any) -> FruitFacts:
    if not isinstance(item, dict):
        raise ValueError("entry must be a JSON object")
    missing = _ENTRY_KEYS - item.keys()
    unknown = item.keys() - _ENTRY_KEYS
    if missing or unknown:
        problems = [f"missing keys {sorted(missing)}"] if missing else []
        problems += [f"unknown keys {sorted(unknown)}"] if unknown else []
        raise ValueError(", ".join(problems))
    for key in ("label", "common_name", "food", "storage_advice"):
        _text(item[key], key)
    sources = item["sources"]
    if not isinstance(sources, list) or not sources:
        raise ValueError("sources must be a non-empty list")
    for source in sources:
        _text(source, "sources item")
    return FruitFacts(
        label=item["label"],
        common_name=item["common_name"],
        nutrition=_parse_nutrition(item["nutrition_per_100g"]),
        storage_advice=item["storage_advice"],
        sources=tuple(sources),
    )


def _parse_nutrition(raw: Any) -> Nutrition:
    if not isinstance(raw, dict) or raw.keys() != _NUTRIENT_MAX.keys():
        raise ValueError(f"nutrition_per_100g must have exactly the keys {sorted(_NUTRIENT_MAX)}")
    values: dict[str, float | None] = {}
    for key, maximum in _NUTRIENT_MAX.items():
        value = raw[key]
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"nutrition_per_100g.{key} must be a number or null")
            value = float(value)
            if not (math.isfinite(value) and 0.0 <= value <= maximum):
                raise ValueError(f"nutrition_per_100g.{key}={value} outside 0..{maximum}")
        values[key] = value
    return Nutrition(**values)


def _text(value: Any, key: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{key} must be a non-empty string")
