"""Fruit catalog: what the recogniser can name, and the facts it tells about it.

Three bundled tables, validated together on first use and cached:

- ``fruits.json``: one entry per Fruits-360 class label (common name, fruit ``type``,
  nutrition per 100 g, storage advice, sources).
- ``types.json``: the fruit type vocabulary (``apple``, ``bell pepper``, ``mandarin``...),
  one entry per type with its own facts, taken from its most common variety.
- ``grocerystore.csv``: each GroceryStore class (coarse, fine) → type, or empty for
  "not in the catalog" (asparagus, mushroom, garlic, leek).

See ``SOURCES.md`` for where the figures come from and how the close calls were decided.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path, PurePath
from typing import Any, NamedTuple, TypeVar

DEFAULT_PATH = Path(__file__).parent / "fruits.json"
DEFAULT_TYPES_PATH = Path(__file__).parent / "types.json"
DEFAULT_GROCERYSTORE_PATH = Path(__file__).parent / "grocerystore.csv"

# Top-level folders of the GroceryStore layout: <split>/<group>/<coarse>/[<fine>/]<file>.
GROCERYSTORE_GROUPS = ("Fruit", "Vegetables")

F = TypeVar("F")  # a parsed catalog entry (FruitFacts, TypeFacts)

_ENTRY_KEYS = frozenset({"label", "type", "common_name", "food", "nutrition_per_100g", "storage_advice", "sources"})
_TYPE_KEYS = frozenset({"type", "common_name", "figures_from", "nutrition_per_100g", "storage_advice", "sources"})
_GROCERYSTORE_HEADER = ["coarse", "fine", "type"]
# Type ids: lowercase singular English words separated by single spaces ("bell pepper").
_TYPE_ID = re.compile(r"[a-z]+( [a-z]+)*")
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
    """One Fruits-360 class label (a variety as photographed) and the type it belongs to."""

    label: str
    type: str
    common_name: str
    nutrition: Nutrition
    storage_advice: str
    sources: tuple[str, ...]


@dataclass(frozen=True)
class TypeFacts:
    """One fruit type; ``figures_from`` names the catalog label whose figures it reuses."""

    type: str
    common_name: str
    nutrition: Nutrition
    storage_advice: str
    sources: tuple[str, ...]
    figures_from: str


# (coarse class, fine class or "") → type, or None for "not in the catalog".
GroceryStoreMap = dict[tuple[str, str], str | None]


class _Tables(NamedTuple):
    fruits: dict[str, FruitFacts]
    types: dict[str, TypeFacts]
    grocerystore: GroceryStoreMap
    labels_by_type: dict[str, tuple[str, ...]]


# --- public API -------------------------------------------------------------------------


def load_catalog(path: Path | None = None, *, types_path: Path | None = None) -> dict[str, FruitFacts]:
    """Return the catalog keyed by label; the bundled file is parsed once and cached.

    Every entry's type must be in the types table (the bundled one unless ``types_path``
    is given). Raises ValueError, naming the offending entry, if the file is malformed.
    """
    if path is None and types_path is None:
        return dict(_default().fruits)
    fruits = _load_fruits(path or DEFAULT_PATH)
    _check_fruit_types(fruits, _types_for(types_path), path or DEFAULT_PATH)
    return fruits


def load_types(path: Path | None = None) -> dict[str, TypeFacts]:
    """Return the fruit type vocabulary with each type's facts, keyed by type id.

    Raises ValueError, naming the offending entry, if the file is malformed.
    """
    if path is None:
        return dict(_default().types)
    return _load_types(path)


def load_grocerystore(path: Path | None = None, *, types_path: Path | None = None) -> GroceryStoreMap:
    """Return the GroceryStore mapping: (coarse, fine or "") → type, or None if not ours.

    Raises ValueError, naming the offending line, if the table is malformed or names a
    type missing from the types table.
    """
    if path is None and types_path is None:
        return dict(_default().grocerystore)
    return _load_grocerystore(path or DEFAULT_GROCERYSTORE_PATH, _types_for(types_path))


def type_of(label: str) -> str:
    """The fruit type of a Fruits-360 class label ("Tomato Cherry Red 1" → "tomato")."""
    try:
        return _default().fruits[label].type
    except KeyError:
        raise KeyError(f"{label!r} is not a catalog label") from None


def labels_by_type() -> dict[str, tuple[str, ...]]:
    """Every type used by Fruits-360 and its labels, sorted; GroceryStore-only types are absent."""
    return dict(_default().labels_by_type)


def folder_type(name: str) -> str:
    """Type of an evaluation folder named by type ("orange", "bell_pepper", "Bell Pepper")
    or by Fruits-360 label ("Apple Golden 1"). Raises KeyError for any other name."""
    tables = _default()
    if name in tables.fruits:
        return tables.fruits[name].type
    candidate = " ".join(name.replace("_", " ").replace("-", " ").lower().split())
    if candidate in tables.types:
        return candidate
    raise KeyError(f"folder {name!r} is neither a fruit type nor a Fruits-360 label")


def grocerystore_type(coarse: str, fine: str | None = None) -> str | None:
    """Type of a GroceryStore class; None if the class is not in the catalog (asparagus...).

    ``fine`` may be left out for a coarse class whose fine classes all share one type
    ("Apple", "Pepper"); "Melon" and "Potato" need it. Raises KeyError for unknown classes.
    """
    table = _default().grocerystore
    key = (coarse, fine or "")
    if key in table:
        return table[key]
    fines = {f: t for (c, f), t in table.items() if c == coarse and f}
    if fine is None and fines and len(set(fines.values())) == 1:
        return next(iter(fines.values()))
    if fine is None and fines:
        raise KeyError(f"GroceryStore class {coarse!r} needs a fine class, one of {sorted(fines)}")
    where = f"{coarse}/{fine}" if fine else coarse
    raise KeyError(f"GroceryStore class {where!r} is not in {DEFAULT_GROCERYSTORE_PATH.name}")


def grocerystore_path_type(path: str | PurePath | Iterable[str]) -> str | None:
    """Type of a GroceryStore image or folder from its path, laid out as
    ``[<split>/]<Fruit|Vegetables>/<coarse>/[<fine>/][<file>]``; None if not in the catalog.

    Raises ValueError if the path has no Fruit/Vegetables folder, KeyError for unknown classes.
    """
    parts = PurePath(path).parts if isinstance(path, (str, PurePath)) else tuple(path)
    groups = [i for i, part in enumerate(parts[:-1]) if part in GROCERYSTORE_GROUPS]
    if not groups:
        raise ValueError(f"{'/'.join(parts)!r} is not in a GroceryStore Fruit/Vegetables folder")
    coarse, rest = parts[groups[-1] + 1], parts[groups[-1] + 2 :]
    fine = rest[0] if rest and (coarse, rest[0]) in _default().grocerystore else None
    return grocerystore_type(coarse, fine)


# --- loading and validation -------------------------------------------------------------


@cache
def _default() -> _Tables:
    types = _load_types(DEFAULT_TYPES_PATH)
    fruits = _load_fruits(DEFAULT_PATH)
    _check_fruit_types(fruits, types, DEFAULT_PATH)
    grocerystore = _load_grocerystore(DEFAULT_GROCERYSTORE_PATH, types)
    for facts in types.values():
        source = fruits.get(facts.figures_from)
        if source is None or source.type != facts.type:
            raise ValueError(
                f"{DEFAULT_TYPES_PATH.name} type {facts.type!r}: figures_from "
                f"{facts.figures_from!r} is not a {DEFAULT_PATH.name} label of that type"
            )
    used = {f.type for f in fruits.values()} | {t for t in grocerystore.values() if t}
    unused = sorted(types.keys() - used)
    if unused:
        raise ValueError(f"{DEFAULT_TYPES_PATH.name}: types used by no label or mapping: {unused}")
    by_type: dict[str, list[str]] = {}
    for label in sorted(fruits):
        by_type.setdefault(fruits[label].type, []).append(label)
    return _Tables(fruits, types, grocerystore, {t: tuple(ls) for t, ls in sorted(by_type.items())})


def _types_for(types_path: Path | None) -> Mapping[str, TypeFacts]:
    return _default().types if types_path is None else _load_types(types_path)


def _read_json_array(path: Path) -> list[Any]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(raw, list):
        raise ValueError(f"{path}: expected a JSON array of entries")  # noqa: TRY004 - one error type per malformed file
    return raw


def _entry_name(path: Path, index: int, item: Any, key: str) -> str:
    name = f"{path.name} entry {index}"
    if isinstance(item, dict) and isinstance(item.get(key), str):
        name += f" ({item[key]!r})"
    return name


def _load_keyed(path: Path, key: str, parse: Callable[[Any], F]) -> dict[str, F]:
    """The entries of a JSON array, parsed and keyed by their ``key`` field; errors name the entry."""
    entries: dict[str, F] = {}
    for index, item in enumerate(_read_json_array(path)):
        name = _entry_name(path, index, item, key)
        try:
            facts = parse(item)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
        if getattr(facts, key) in entries:
            raise ValueError(f"{name}: duplicate {key}")
        entries[getattr(facts, key)] = facts
    return entries


def _load_fruits(path: Path) -> dict[str, FruitFacts]:
    return _load_keyed(path, "label", _parse_entry)


def _load_types(path: Path) -> dict[str, TypeFacts]:
    return _load_keyed(path, "type", _parse_type)


def _check_fruit_types(fruits: Mapping[str, FruitFacts], types: Mapping[str, TypeFacts], path: Path) -> None:
    for facts in fruits.values():
        if facts.type not in types:
            raise ValueError(f"{path.name} entry {facts.label!r}: unknown type {facts.type!r}")


def _load_grocerystore(path: Path, types: Mapping[str, TypeFacts]) -> GroceryStoreMap:
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))
    if not rows or rows[0] != _GROCERYSTORE_HEADER:
        raise ValueError(f"{path.name}: the first line must be {','.join(_GROCERYSTORE_HEADER)}")
    table: GroceryStoreMap = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        name = f"{path.name} line {line}"
        if len(row) != 3:
            raise ValueError(f"{name}: expected 3 fields (coarse, fine, type), got {len(row)}")
        coarse, fine, type_ = (field.strip() for field in row)
        name += f" ({coarse}/{fine})" if fine else f" ({coarse})"
        if not coarse:
            raise ValueError(f"{name}: empty coarse class")
        if type_ and type_ not in types:
            raise ValueError(f"{name}: unknown type {type_!r}")
        if (coarse, fine) in table:
            raise ValueError(f"{name}: duplicate class")
        if (coarse, "") in table or (not fine and any(c == coarse for c, _ in table)):
            raise ValueError(f"{name}: {coarse!r} has both a row without and rows with a fine class")
        table[(coarse, fine)] = type_ or None
    return table


def _parse_entry(item: Any) -> FruitFacts:
    _check_keys(item, _ENTRY_KEYS)
    for key in ("label", "common_name", "food", "storage_advice"):
        _text(item[key], key)
    _type_id(item["type"])
    return FruitFacts(
        label=item["label"],
        type=item["type"],
        common_name=item["common_name"],
        nutrition=_parse_nutrition(item["nutrition_per_100g"]),
        storage_advice=item["storage_advice"],
        sources=_parse_sources(item["sources"]),
    )


def _parse_type(item: Any) -> TypeFacts:
    _check_keys(item, _TYPE_KEYS)
    _type_id(item["type"])
    for key in ("common_name", "figures_from", "storage_advice"):
        _text(item[key], key)
    return TypeFacts(
        type=item["type"],
        common_name=item["common_name"],
        nutrition=_parse_nutrition(item["nutrition_per_100g"]),
        storage_advice=item["storage_advice"],
        sources=_parse_sources(item["sources"]),
        figures_from=item["figures_from"],
    )


def _check_keys(item: Any, expected: frozenset[str]) -> None:
    if not isinstance(item, dict):
        raise ValueError("entry must be a JSON object")  # noqa: TRY004 - one error type per malformed file
    missing = expected - item.keys()
    unknown = item.keys() - expected
    if missing or unknown:
        problems = [f"missing keys {sorted(missing)}"] if missing else []
        problems += [f"unknown keys {sorted(unknown)}"] if unknown else []
        raise ValueError(", ".join(problems))


def _parse_sources(sources: Any) -> tuple[str, ...]:
    if not isinstance(sources, list) or not sources:
        raise ValueError("sources must be a non-empty list")
    for source in sources:
        _text(source, "sources item")
    return tuple(sources)


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


def _type_id(value: Any) -> None:
    if not isinstance(value, str) or not _TYPE_ID.fullmatch(value):
        raise ValueError(f"type must be lowercase words separated by single spaces, got {value!r}")


def _text(value: Any, key: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{key} must be a non-empty string")
