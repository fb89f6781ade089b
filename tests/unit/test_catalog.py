"""Tests for the fruit catalog: coverage of the dataset labels, content sanity, loader validation."""

import json
import re
from pathlib import Path

import pytest

from core.catalog import FruitFacts, Nutrition, load_catalog

PROJECT_ROOT = Path(__file__).parents[2]
TRAINING_DIR = PROJECT_ROOT / ".." / "shared" / "data" / "fruits360" / "Training"

# Plausible ranges per 100 g of raw produce or nuts.
PLAUSIBLE = {
    "energy_kcal": (0, 900),
    "water_g": (0, 100),
    "sugars_g": (0, 100),
    "fibre_g": (0, 100),
    "vitamin_c_mg": (0, 500),
    "potassium_mg": (0, 1500),
}


@pytest.fixture(scope="module")
def catalog() -> dict[str, FruitFacts]:
    return load_catalog()


def test_every_training_label_has_an_entry(catalog: dict[str, FruitFacts]) -> None:
    if not TRAINING_DIR.is_dir():
        pytest.skip(f"fruits360 training data not found at {TRAINING_DIR.resolve()}")
    labels = {p.name for p in TRAINING_DIR.iterdir() if p.is_dir()}
    assert labels, f"no label folders in {TRAINING_DIR}"
    assert sorted(labels - catalog.keys()) == []


def test_entries_have_text_and_sources(catalog: dict[str, FruitFacts]) -> None:
    for label, facts in catalog.items():
        assert facts.label == label
        assert facts.common_name.strip(), label
        assert facts.storage_advice.strip(), label
        assert facts.sources and all(s.strip() for s in facts.sources), label


def test_nutrition_is_plausible(catalog: dict[str, FruitFacts]) -> None:
    for label, facts in catalog.items():
        n = facts.nutrition
        assert n.energy_kcal is not None, label
        for field, (low, high) in PLAUSIBLE.items():
            value = getattr(n, field)
            assert value is None or low <= value <= high, f"{label}: {field}={value}"
        parts = [v for v in (n.water_g, n.sugars_g, n.fibre_g) if v is not None]
        assert sum(parts) <= 100.5, f"{label}: water + sugars + fibre exceed 100 g"


def test_numbered_repeats_share_common_name(catalog: dict[str, FruitFacts]) -> None:
    names: dict[str, set[str]] = {}
    for label, facts in catalog.items():
        names.setdefault(re.sub(r" \d+$", "", label), set()).add(facts.common_name)
    assert {base: n for base, n in names.items() if len(n) > 1} == {}


def test_default_catalog_is_cached() -> None:
    assert load_catalog()["Banana 1"] is load_catalog()["Banana 1"]


NUTRITION = {
    "energy_kcal": 52,
    "water_g": 85.56,
    "sugars_g": None,
    "fibre_g": 2.4,
    "vitamin_c_mg": 4.6,
    "potassium_mg": 107,
}


def _entry(**overrides: object) -> dict[str, object]:
    entry: dict[str, object] = {
        "label": "Apple Braeburn 1",
        "common_name": "Braeburn apple",
        "food": "apple",
        "nutrition_per_100g": NUTRITION,
        "storage_advice": "Refrigerate.",
        "sources": ["USDA FoodData Central, SR Legacy 171688, Apples, raw, with skin"],
    }
    entry.update(overrides)
    return entry


def test_loader_reads_a_valid_file(tmp_path: Path) -> None:
    path = tmp_path / "fruits.json"
    path.write_text(json.dumps([_entry()]), encoding="utf-8")
    facts = load_catalog(path)["Apple Braeburn 1"]
    assert facts.nutrition == Nutrition(52.0, 85.56, None, 2.4, 4.6, 107.0)
    assert facts.sources == ("USDA FoodData Central, SR Legacy 171688, Apples, raw, with skin",)


@pytest.mark.parametrize(
    "entries",
    [
        pytest.param([_entry(common_name="  ")], id="blank-common-name"),
        pytest.param([_entry(sources=[])], id="no-sources"),
        pytest.param([_entry(storage_advice=None)], id="missing-storage-advice"),
        pytest.param([_entry(colour="red")], id="unknown-key"),
        pytest.param([_entry(nutrition_per_100g={**NUTRITION, "water_g": -1})], id="negative-water"),
        pytest.param(
            [_entry(nutrition_per_100g={**NUTRITION, "energy_kcal": "52"})], id="energy-as-string"
        ),
        pytest.param([_entry(nutrition_per_100g={"energy_kcal": 52})], id="missing-nutrients"),
        pytest.param([_entry(), _entry()], id="duplicate-label"),
    ],
)
def test_loader_rejects_malformed_entry(tmp_path: Path, entries: list[object]) -> None:
    path = tmp_path / "fruits.json"
    path.write_text(json.dumps(entries), encoding="utf-8")
    with pytest.raises(ValueError, match="Apple Braeburn 1"):
        load_catalog(path)


def test_loader_rejects_invalid_json(tmp_path: Path) -> None:
    path = tmp_path / "fruits.json"
    path.write_text('[{"label": "Apple Braeburn 1",', encoding="utf-8")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_catalog(path)
