"""Packing the training images (training.packing) without S3: the parts and the manifest's contents."""

from tqdm import tqdm

from core.lake import packed_images_table
from core.recipe import TrainingRows
from training import packing


def test_parts_keep_the_order_and_cut_at_about_part_bytes(monkeypatch):
    monkeypatch.setattr(packing, "PART_BYTES", 10)
    images = [lambda n=n: bytes([n]) * 4 for n in range(7)]
    with tqdm(disable=True) as bar:
        parts = list(packing._parts(images, bar))
    assert [start for start, _ in parts] == [0, 3, 6]
    assert [b for _, chunk in parts for b in chunk] == [bytes([n]) * 4 for n in range(7)]


def test_contents_name_each_file_with_its_size_and_a_made_image_without(tmp_path):
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"12345")
    rows = TrainingRows(["A", "A"], ["apple", "apple"], ["fruits360", "augmented"], [str(photo), f"{photo}#copy0"])
    assert packing.contents("desc", rows, 3) == {
        "description": "desc", "per_class": 3, "images": [[str(photo), 5], [f"{photo}#copy0", None]],
    }  # fmt: skip


def test_a_packed_part_numbers_its_rows_from_its_start():
    rows = TrainingRows(["A", "B", "C"], ["a", "b", "c"], ["fruits360"] * 3, ["x", "y", "z"])
    table = packed_images_table(1, [b"y", b"z"], rows)
    assert table.column("row").to_pylist() == [1, 2]
    assert table.column("label").to_pylist() == ["B", "C"] and table.column("image").to_pylist() == [b"y", b"z"]
