"""Tests for the fruit catalog: coverage of the dataset labels, types and GroceryStore
classes, content sanity, loader validation."""

import json
import re
from pathlib import Path

import pytest

from core.catalog import (
    DEFAULT_PATH,
    FruitFacts,
    Nutrition,
    TypeFacts,
    folder_type,
    grocerystore_path_type,
    grocerystore_type,
    labels_by_type,
    load_catalog,
    load_grocerystore,
    load_types,
    type_of,
)

PROJECT_ROOT = Path(__file__).parents[2]
TRAINING_DIR = PROJECT_ROOT / ".." / "shared" / "data" / "fruits360" / "Training"
GROCERYSTORE_DIR = PROJECT_ROOT / ".." / "shared" / "data" / "grocerystore"
NOT_IN_CATALOG = {"Asparagus", "Brown-Cap-Mushroom", "Garlic", "Leek"}

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
        "type": "apple",
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
        pytest.param([_entry(nutrition_per_100g={**NUTRITION, "energy_kcal": "52"})], id="energy-as-string"),
        pytest.param([_entry(nutrition_per_100g={"energy_kcal": 52})], id="missing-nutrients"),
        pytest.param([_entry(), _entry()], id="duplicate-label"),
        pytest.param([_entry(type="fruit salad")], id="unknown-type"),
        pytest.param([_entry(type="Apples ")], id="type-not-an-id"),
        pytest.param([{k: v for k, v in _entry().items() if k != "type"}], id="missing-type"),
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


# --- fruit types ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def types() -> dict[str, TypeFacts]:
    return load_types()


def test_every_training_folder_has_a_known_type(types: dict[str, TypeFacts]) -> None:
    if not TRAINING_DIR.is_dir():
        pytest.skip(f"fruits360 training data not found at {TRAINING_DIR.resolve()}")
    for folder in sorted(p.name for p in TRAINING_DIR.iterdir() if p.is_dir()):
        assert type_of(folder) in types, folder
        assert folder_type(folder) == type_of(folder)


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        *[(f"Apple {v}", "apple") for v in ("6", "Braeburn 1", "Golden 3", "Granny Smith 1", "hit 1")],
        *[(f"Pepper {c} 1", "bell pepper") for c in ("Green", "Red", "Yellow", "Orange")],
        *[(f"Cherry {v}", "cherry") for v in ("1", "2", "Rainier 1", "Wax Black 1", "Wax Red 1", "Wax Yellow 1")],
        ("Tomato Cherry Red 1", "tomato"),
        ("Tomato not Ripened 1", "tomato"),
        ("Pitahaya Red 1", "dragon fruit"),
        ("Mandarine 1", "mandarin"),
        ("Clementine 1", "mandarin"),
        ("Tangelo 1", "mandarin"),
        ("Cantaloupe 2", "cantaloupe"),
        ("Melon Piel de Sapo 1", "melon"),
        ("Watermelon 1", "watermelon"),
        ("Potato Red Washed 1", "potato"),
        ("Potato White 1", "potato"),
        ("Potato Sweet 1", "sweet potato"),
        ("Maracuja 1", "passion fruit"),
        ("Passion Fruit 1", "passion fruit"),
        ("Granadilla 1", "granadilla"),
        ("Physalis with Husk 1", "physalis"),
        ("Onion Red Peeled 1", "onion"),
        ("Corn Husk 1", "corn"),
        ("Nut Forest 1", "hazelnut"),
        ("Cucumber Ripe 2", "cucumber"),
        ("Zucchini dark 1", "zucchini"),
        ("Grapefruit White 1", "grapefruit"),
        ("Pomelo Sweetie 1", "pomelo"),
        ("Limes 1", "lime"),
        ("Lemon Meyer 1", "lemon"),
        ("Kaki 1", "persimmon"),
        ("Cactus fruit 1", "prickly pear"),
        ("Carambula 1", "star fruit"),
        ("Cocos 1", "coconut"),
        ("Mangostan 1", "mangosteen"),
        ("Eggplant long 1", "eggplant"),
        ("Ginger Root 1", "ginger"),
    ],
)
def test_type_of_examples(label: str, expected: str) -> None:
    assert type_of(label) == expected
    assert load_catalog()[label].type == expected


def test_type_of_unknown_label_names_it() -> None:
    with pytest.raises(KeyError, match="Apple Fuji 9"):
        type_of("Apple Fuji 9")


def test_type_ids_are_lowercase_singular_names(types: dict[str, TypeFacts]) -> None:
    assert len(types) == 68
    for type_id, facts in types.items():
        assert facts.type == type_id
        assert re.fullmatch(r"[a-z]+( [a-z]+)*", type_id), type_id
        assert facts.common_name.strip() and facts.storage_advice.strip() and facts.sources


def test_type_facts_reuse_their_named_variety(types: dict[str, TypeFacts]) -> None:
    catalog = load_catalog()
    for type_id, facts in types.items():
        variety = catalog[facts.figures_from]
        assert variety.type == type_id
        assert facts.nutrition == variety.nutrition, type_id


def test_every_type_is_used_and_labels_by_type_covers_the_catalog(types: dict[str, TypeFacts]) -> None:
    by_type = labels_by_type()
    used = set(by_type) | {t for t in load_grocerystore().values() if t}
    assert used == types.keys()
    assert sorted(label for labels in by_type.values() for label in labels) == sorted(load_catalog())
    assert by_type["bell pepper"] == ("Pepper Green 1", "Pepper Orange 1", "Pepper Red 1", "Pepper Yellow 1")


def test_potato_white_vitamin_c_is_the_fdc_170028_figure(types: dict[str, TypeFacts]) -> None:
    assert load_catalog()["Potato White 1"].nutrition.vitamin_c_mg == 9.1
    assert types["potato"].nutrition.vitamin_c_mg == 9.1


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("orange", "orange"),
        ("bell pepper", "bell pepper"),
        ("bell_pepper", "bell pepper"),
        ("Sweet-Potato", "sweet potato"),
        ("Apple Golden 1", "apple"),
        ("Tomato Cherry Red 1", "tomato"),
    ],
)
def test_folder_type(name: str, expected: str) -> None:
    assert folder_type(name) == expected


@pytest.mark.parametrize("name", ["oranges", "Apple Golden 9", "Asparagus", ""])
def test_folder_type_rejects_unknown_names(name: str) -> None:
    with pytest.raises(KeyError, match="neither a fruit type nor a Fruits-360 label"):
        folder_type(name)


# --- GroceryStore mapping ------------------------------------------------------------


def _grocerystore_folders(split: str) -> list[Path]:
    """Class folders holding images: <split>/<group>/<coarse>[/<fine>]."""
    root = GROCERYSTORE_DIR / split
    if not root.is_dir():
        pytest.skip(f"GroceryStore data not found at {root.resolve()}")
    return sorted({p.parent.relative_to(root) for p in root.rglob("*.jpg")})


@pytest.mark.parametrize("split", ["train", "val"])
def test_every_grocerystore_folder_maps(split: str, types: dict[str, TypeFacts]) -> None:
    folders = _grocerystore_folders(split)
    assert folders
    unmapped = []
    for folder in folders:
        coarse = folder.parts[1]
        fine = folder.parts[2] if len(folder.parts) > 2 else None
        type_ = grocerystore_type(coarse, fine)
        assert grocerystore_path_type(Path(split) / folder / "x.jpg") == type_, folder
        assert grocerystore_path_type(Path(split) / folder) == type_, folder
        if type_ is None:
            unmapped.append(fine or coarse)
        else:
            assert type_ in types, folder
    assert set(unmapped) <= NOT_IN_CATALOG
    if split == "train":
        assert set(unmapped) == NOT_IN_CATALOG


def test_every_grocerystore_class_of_classes_csv_is_in_the_table() -> None:
    classes = GROCERYSTORE_DIR / "classes.csv"
    if not classes.is_file():
        pytest.skip(f"GroceryStore classes.csv not found at {classes.resolve()}")
    table = load_grocerystore()
    fines = {f for _, f in table if f} | {c for c, f in table if not f}
    for line in classes.read_text(encoding="utf-8").splitlines()[1:]:
        name, _, coarse, *_ = line.split(",")
        if "/Packages/" not in line:
            assert name in fines or coarse in fines, line


@pytest.mark.parametrize(
    ("coarse", "fine", "expected"),
    [
        ("Apple", "Granny-Smith", "apple"),
        ("Apple", None, "apple"),
        ("Satsumas", None, "mandarin"),
        ("Melon", "Cantaloupe", "cantaloupe"),
        ("Melon", "Galia-Melon", "melon"),
        ("Melon", "Honeydew-Melon", "melon"),
        ("Melon", "Watermelon", "watermelon"),
        ("Potato", "Floury-Potato", "potato"),
        ("Potato", "Sweet-Potato", "sweet potato"),
        ("Red-Grapefruit", None, "grapefruit"),
        ("Aubergine", None, "eggplant"),
        ("Red-Beet", None, "beetroot"),
        ("Carrots", None, "carrot"),
        ("Ginger", None, "ginger"),
        ("Pepper", "Orange-Bell-Pepper", "bell pepper"),
        ("Passion-Fruit", None, "passion fruit"),
        *[(c, None, None) for c in sorted(NOT_IN_CATALOG)],
    ],
)
def test_grocerystore_type_examples(coarse: str, fine: str | None, expected: str | None) -> None:
    assert grocerystore_type(coarse, fine) == expected


def test_grocerystore_type_errors() -> None:
    with pytest.raises(KeyError, match="'Melon' needs a fine class"):
        grocerystore_type("Melon")
    with pytest.raises(KeyError, match="Durian"):
        grocerystore_type("Durian")
    with pytest.raises(KeyError, match="Apple/Fuji"):
        grocerystore_type("Apple", "Fuji")
    with pytest.raises(ValueError, match="not in a GroceryStore"):
        grocerystore_path_type("train/Apple/x.jpg")


# --- validation of broken tables -------------------------------------------------------


def _type_entry(**overrides: object) -> dict[str, object]:
    entry: dict[str, object] = {
        "type": "apple",
        "common_name": "Apple",
        "figures_from": "Apple Braeburn 1",
        "nutrition_per_100g": NUTRITION,
        "storage_advice": "Refrigerate.",
        "sources": ["USDA FoodData Central, SR Legacy 171688, Apples, raw, with skin"],
    }
    entry.update(overrides)
    return entry


def test_loader_checks_types_against_a_given_types_table(tmp_path: Path) -> None:
    types_path = tmp_path / "types.json"
    types_path.write_text(json.dumps([_type_entry()]), encoding="utf-8")
    fruits_path = tmp_path / "fruits.json"
    fruits_path.write_text(json.dumps([_entry(), _entry(label="Pear 1", type="pear")]), encoding="utf-8")
    with pytest.raises(ValueError, match="fruits.json entry 'Pear 1': unknown type 'pear'"):
        load_catalog(fruits_path, types_path=types_path)
    assert load_types(types_path)["apple"].figures_from == "Apple Braeburn 1"
    # The bundled fruits.json uses many types the one-entry table lacks.
    with pytest.raises(ValueError, match="unknown type"):
        load_catalog(DEFAULT_PATH, types_path=types_path)


@pytest.mark.parametrize(
    "entries",
    [
        pytest.param([_type_entry(), _type_entry()], id="duplicate-type"),
        pytest.param([_type_entry(common_name="")], id="blank-common-name"),
        pytest.param([_type_entry(figures_from=None)], id="missing-figures-from"),
        pytest.param([_type_entry(sources=[])], id="no-sources"),
        pytest.param([_type_entry(shelf_life="2 weeks")], id="unknown-key"),
        pytest.param([_type_entry(nutrition_per_100g={**NUTRITION, "fibre_g": 101})], id="fibre-too-high"),
    ],
)
def test_types_loader_rejects_malformed_entry(tmp_path: Path, entries: list[object]) -> None:
    path = tmp_path / "types.json"
    path.write_text(json.dumps(entries), encoding="utf-8")
    with pytest.raises(ValueError, match=r"types\.json entry \d+ \('apple'\)"):
        load_types(path)


def test_types_loader_rejects_bad_type_id(tmp_path: Path) -> None:
    path = tmp_path / "types.json"
    path.write_text(json.dumps([_type_entry(type="Bell Peppers")]), encoding="utf-8")
    with pytest.raises(ValueError, match="'Bell Peppers'.*lowercase words"):
        load_types(path)


def _write_types(tmp_path: Path, *type_ids: str) -> Path:
    path = tmp_path / "types.json"
    path.write_text(json.dumps([_type_entry(type=t) for t in type_ids]), encoding="utf-8")
    return path


def test_grocerystore_loader_reads_a_valid_table(tmp_path: Path) -> None:
    types_path = _write_types(tmp_path, "apple", "melon")
    path = tmp_path / "grocerystore.csv"
    path.write_text("coarse,fine,type\nApple,,apple\nMelon,Galia-Melon,melon\nLeek,,\n", encoding="utf-8")
    assert load_grocerystore(path, types_path=types_path) == {
        ("Apple", ""): "apple",
        ("Melon", "Galia-Melon"): "melon",
        ("Leek", ""): None,
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("class,type\nApple,apple\n", "first line must be coarse,fine,type", id="bad-header"),
        pytest.param("coarse,fine,type\nApple,,pomme\n", r"line 2 \(Apple\): unknown type 'pomme'", id="unknown-type"),
        pytest.param("coarse,fine,type\nApple,,apple\nApple,,apple\n", r"line 3 \(Apple\): duplicate", id="duplicate"),
        pytest.param(
            "coarse,fine,type\nMelon,Galia-Melon,melon\nMelon,Galia-Melon,apple\n",
            r"line 3 \(Melon/Galia-Melon\): duplicate",
            id="duplicate-fine",
        ),
        pytest.param(
            "coarse,fine,type\nMelon,,melon\nMelon,Galia-Melon,melon\n",
            r"line 3 \(Melon/Galia-Melon\): 'Melon' has both",
            id="coarse-and-fine",
        ),
        pytest.param("coarse,fine,type\nApple,apple\n", "line 2: expected 3 fields", id="too-few-fields"),
        pytest.param("coarse,fine,type\n,Granny-Smith,apple\n", "line 2.*empty coarse class", id="no-coarse"),
    ],
)
def test_grocerystore_loader_rejects_broken_table(tmp_path: Path, text: str, message: str) -> None:
    types_path = _write_types(tmp_path, "apple", "melon")
    path = tmp_path / "grocerystore.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=message):
        load_grocerystore(path, types_path=types_path)


def test_bundled_tables_are_cached() -> None:
    assert load_types()["apple"] is load_types()["apple"]
    assert load_grocerystore() == load_grocerystore()
