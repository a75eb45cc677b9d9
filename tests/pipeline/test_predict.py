import cv2
import numpy as np
import pytest

from pipeline.predict import decode_file, drawn_name


def png(array: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".png", array)
    assert ok
    return buffer.tobytes()


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def test_decode_file_gives_8_bit_rgb_for_every_png_kind(rng):
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    bgra = np.dstack([rgb[..., ::-1], rng.integers(0, 256, (5, 7), dtype=np.uint8)])
    gray = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    deep = rng.integers(0, 65536, (5, 7, 3), dtype=np.uint16)

    np.testing.assert_array_equal(decode_file(png(rgb[..., ::-1])), rgb)
    np.testing.assert_array_equal(decode_file(png(bgra)), rgb)  # alpha dropped
    np.testing.assert_array_equal(decode_file(png(gray)), np.repeat(gray[..., None], 3, axis=2))
    # 16-bit scaled to 8 (x / 257, rounded), not passed on as values up to 65535.
    got = decode_file(png(deep))
    assert got.dtype == np.uint8
    assert np.abs(got.astype(int) - np.round(deep[..., ::-1] / 257).astype(int)).max() <= 1


def test_decode_file_turns_the_image_by_its_exif_orientation(rng):
    import io

    from PIL import Image, ImageOps

    stored = Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8))
    exif = stored.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to show": a phone held upright
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", exif=exif.tobytes())
    shown = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(buffer.getvalue()))))
    got = decode_file(buffer.getvalue())
    assert got.shape == (30, 20, 3)
    np.testing.assert_array_equal(got, shown)


def test_decode_file_raises_on_bytes_that_are_no_image():
    with pytest.raises(RuntimeError):
        decode_file(b"\xff\xd8\xff not really a jpeg")


@pytest.mark.parametrize(
    ("path", "images", "want"),
    [
        ("/data/in/a.jpg", "/data/in", "a.jpg"),
        ("/data/in/sub/a.jpg", "/data/in/", "sub/a.jpg"),
        ("s3://bucket/in/sub/a.png", "s3://bucket/in", "sub/a.png"),
        ("/data/in/a.jpg", "/data/in/a.jpg", "a.jpg"),  # the root named the file itself
    ],
)
def test_drawn_name_keeps_the_path_below_the_images_root(path, images, want):
    assert drawn_name(path, images) == want
