"""Bounds on input, in the library: times in the years 1000..9999 (strings and datetimes),
reversed windows, and pictures decoded and verified with Pillow before anything is stored
(cut short, decompression bombs, a format other than the first bytes say, a configurable
pixel limit). The service and the CLI have their own tests (test_server_bounds.py,
test_cli.py)."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime
from pathlib import Path

import pytest

from bad_pictures import FORMATS, huge_png, picture, png_signature_on_jpeg, truncated
from helpers import table_counts
from personavlm.embed import HashingEmbedder
from personavlm.errors import ConfigError, ValidationError
from personavlm.media.blobs import DEFAULT_MAX_PIXELS, BlobStore, check_max_pixels
from personavlm.memory import MemoryStore
from personavlm.timeutil import MAX_YEAR, MIN_YEAR, TimeWindow, parse_time

# ------------------------------------------------------------------ times


@pytest.mark.parametrize(
    "value",
    ["0999-12-31 23:59", "0001-01-01 00:00", "0999-06-01T10:00:00", " 0500-01-01 12:00 "],
)
def test_parse_time_refuses_years_before_1000(value: str) -> None:
    with pytest.raises(ValidationError, match=r"start: year \d+ is out of range.*1000\.\.9999"):
        parse_time(value, field="start")


@pytest.mark.parametrize("year", [1, 999])
def test_parse_time_refuses_datetimes_outside_the_years(year: int) -> None:
    with pytest.raises(ValidationError, match=rf"time: year {year} is out of range"):
        parse_time(datetime(year, 5, 1, 10, 0))


def test_parse_time_keeps_the_edge_years() -> None:
    assert (MIN_YEAR, MAX_YEAR) == (1000, 9999)
    assert parse_time("1000-01-01 00:00") == datetime(1000, 1, 1)
    assert parse_time(datetime(9999, 12, 31, 23, 59, 59, 123)) == datetime(9999, 12, 31, 23, 59, 59)


def test_a_window_of_refused_years_names_the_bound() -> None:
    with pytest.raises(ValidationError, match="end: year 5 is out of range"):
        TimeWindow.parse("2024-01-01 00:00", datetime(5, 1, 1))


def test_store_verbs_refuse_old_years_and_write_nothing(store: MemoryStore) -> None:
    store.add("ann", "semantic", "Ann likes tea", time="2024-01-01 10:00")
    before = table_counts(store)
    with pytest.raises(ValidationError, match="year 999"):
        store.add("ann", "semantic", "x", time="0999-01-01 10:00")
    with pytest.raises(ValidationError, match="year 5"):
        store.add("ann", "semantic", "x", time=datetime(5, 1, 1))
    for verb in (store.list, store.turns):
        with pytest.raises(ValidationError, match="start: year 999"):
            verb("ann", start="0999-01-01 00:00")
    with pytest.raises(ValidationError, match="start is after end"):
        store.search("ann", "tea", start="2024-02-01 00:00", end="2024-01-01 00:00")
    assert table_counts(store) == before


# ------------------------------------------------------------------ pictures


def blob_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_supported_format_is_decoded_and_stored(tmp_path: Path, fmt: str) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    data = picture(fmt)
    ref = blobs.put(data)
    assert (ref.mime, ref.size, ref.id) == (
        FORMATS[fmt],
        len(data),
        hashlib.sha256(data).hexdigest(),
    )
    assert blobs.read(ref.id) == data


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "BMP"])
def test_a_picture_cut_short_is_refused(tmp_path: Path, fmt: str) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    with pytest.raises(ValidationError, match=f"is not a valid {fmt} picture"):
        blobs.put(truncated(picture(fmt, size=(64, 64))))
    assert blob_files(tmp_path / "blobs") == []


def test_a_png_cut_inside_its_last_chunk_is_refused(tmp_path: Path) -> None:
    # Only the 12-byte IEND chunk is missing: the header and pixel data are whole, so only a
    # full verification notices.
    with pytest.raises(ValidationError, match="not a valid PNG picture"):
        BlobStore(tmp_path / "blobs").describe(picture("PNG")[:-12])


def test_a_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    bomb = huge_png(20_000, 20_000)
    assert len(bomb) < 200  # a few bytes declaring 400 megapixels
    blobs = BlobStore(tmp_path / "blobs")
    with pytest.raises(ValidationError, match=r"too large a picture.*at most 40,000,000 pixels"):
        blobs.put(bomb)
    # Under Pillow's own guard (89 MP) but over ours: our limit, with the size, says why.
    with pytest.raises(ValidationError, match=r"is 7000x7000 = 49,000,000 pixels; the limit is "
                       r"40,000,000 pixels"):  # fmt: skip
        blobs.put(huge_png(7_000, 7_000))
    assert blob_files(tmp_path / "blobs") == []


def test_bytes_of_another_format_than_their_first_bytes_say_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not a valid PNG picture"):
        BlobStore(tmp_path / "blobs").put(png_signature_on_jpeg())


def test_a_data_url_type_is_not_trusted_the_bytes_decide(tmp_path: Path) -> None:
    # A JPEG sent as data:image/png is stored as the JPEG it is (documented in blobs.py).
    jpeg = picture("JPEG")
    url = "data:image/png;base64," + base64.b64encode(jpeg).decode()
    assert BlobStore(tmp_path / "blobs").put(url).mime == "image/jpeg"


def test_the_pixel_limit_is_configurable(tmp_path: Path) -> None:
    assert DEFAULT_MAX_PIXELS == 40_000_000
    small = BlobStore(tmp_path / "blobs", max_pixels=32 * 24 - 1)
    with pytest.raises(ValidationError, match=r"32x24 = 768 pixels; the limit is 767 pixels"):
        small.put(picture("PNG", size=(32, 24)))
    assert BlobStore(tmp_path / "blobs", max_pixels=32 * 24).put(picture("PNG", size=(32, 24)))
    for bad in (0, -5):
        with pytest.raises(ConfigError, match="picture limit"):
            check_max_pixels(bad)
        with pytest.raises(ConfigError, match="picture limit"):
            BlobStore(tmp_path / "blobs", max_pixels=bad)


def test_the_store_passes_its_pixel_limit_and_refuses_without_writing(tmp_path: Path) -> None:
    location = tmp_path / "memory.db"
    with MemoryStore.open(location, embedder=HashingEmbedder(), max_image_pixels=100) as store:
        assert store.blobs.max_pixels == 100
        before = table_counts(store)
        with pytest.raises(ValidationError, match="the limit is 100 pixels"):
            store.store_image(picture("PNG", size=(11, 10)))
        with pytest.raises(ValidationError, match="not a valid PNG picture"):
            store.store_image(truncated(picture("PNG", size=(10, 10))))
        assert table_counts(store) == before
        assert blob_files(tmp_path / "memory.db.blobs") == []
        assert store.store_image(picture("PNG", size=(10, 10))).mime == "image/png"
    with pytest.raises(ConfigError, match="picture limit"):
        MemoryStore.open(tmp_path / "other.db", embedder=HashingEmbedder(), max_image_pixels=0)
    assert not (tmp_path / "other.db").exists()  # a bad limit opens nothing


def test_the_store_default_limit_is_the_blob_default(tmp_path: Path) -> None:
    with MemoryStore.open(tmp_path / "memory.db", embedder=HashingEmbedder()) as store:
        assert store.blobs.max_pixels == DEFAULT_MAX_PIXELS


def test_ingest_checks_every_picture_before_writing(tmp_path: Path, store: MemoryStore) -> None:
    import json

    from personavlm.memory.ingest import ingest_file

    (tmp_path / "good.png").write_bytes(picture("PNG"))
    (tmp_path / "cut.png").write_bytes(truncated(picture("PNG")))
    chat = tmp_path / "chat.jsonl"
    lines: list[dict[str, object]] = [
        {
            "id": "1",
            "time": "2024-05-01 08:00",
            "role": "user",
            "text": "a",
            "images": ["good.png"],
        },
        {"id": "2", "time": "2024-05-01 08:01", "role": "user", "text": "b", "images": ["cut.png"]},
    ]
    chat.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    before = table_counts(store)
    with pytest.raises(ValidationError, match=r"cut\.png is not a valid PNG picture"):
        ingest_file(store, "ann", chat)
    assert table_counts(store) == before
    assert blob_files(tmp_path / "memory.db.blobs") == []
