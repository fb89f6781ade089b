"""The trainer's image sources: augmented copies of real photos."""

import io

import numpy as np
from PIL import Image

from core.recipe import AUGMENTED, COPY_MARK, GROCERYSTORE, TrainingRows
from training.trainer import TrainingImages, augmented_copies


def photo(colour, size=(120, 90)) -> bytes:
    image = Image.new("RGB", size, colour)
    image.paste((255, 255, 255), (10, 10, 40, 40))  # something for a crop or a mirror to move
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=95)
    return out.getvalue()


PHOTOS = TrainingImages(
    [lambda: photo((200, 30, 30)), lambda: photo((30, 200, 30))],
    TrainingRows(["GS:Apple", "GS:Lime"], ["apple", "lime"], [GROCERYSTORE] * 2, ["a.jpg", "b.jpg"]),
)


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((60, 45)), dtype=np.float32)


def test_copies_keep_their_photos_class_and_name_it_as_source():
    copies = augmented_copies(PHOTOS, 3, seed=0)
    assert copies.rows.labels == ["GS:Apple"] * 3 + ["GS:Lime"] * 3
    assert copies.rows.types == ["apple"] * 3 + ["lime"] * 3
    assert copies.rows.origins == [AUGMENTED] * 6
    assert copies.rows.sources == [f"{s}{COPY_MARK}{k}" for s in ("a.jpg", "b.jpg") for k in range(3)]
    assert (PHOTOS.rows + copies.rows).labelled(np.zeros((8, 1), np.float32)).copy_of.tolist() == [-1, -1, 0, 0, 0, 1, 1, 1]


def test_copies_are_deterministic_and_differ_from_the_photo_and_each_other():
    first, again = augmented_copies(PHOTOS, 3, seed=0), augmented_copies(PHOTOS, 3, seed=0)
    made = [image() for image in first.images]
    assert made == [image() for image in again.images]
    assert made != [image() for image in augmented_copies(PHOTOS, 3, seed=1).images]
    original = pixels(PHOTOS.images[0]())
    for copy in made[:3]:
        assert np.abs(pixels(copy) - original).mean() > 1.0
        # still the same photo, roughly: the dominant colour stays red
        red, green, _ = pixels(copy).reshape(-1, 3).mean(axis=0)
        assert red > green
    assert len({bytes(c) for c in made[:3]}) == 3
