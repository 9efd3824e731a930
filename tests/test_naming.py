"""storage/naming.py: the one layout of store names, built, parsed and listed."""

from __future__ import annotations

from pathlib import Path

import pytest

from steadydepth.errors import InputError
from storage.naming import (
    MAX_NAME,
    list_stores,
    model_of,
    refined_uri,
    require_distinct_names,
    safe_name,
    store_kind,
    store_uri,
    video_name,
)


def test_store_uri_is_sanitised(tmp_path):
    assert store_uri(str(tmp_path), "walk") == str(tmp_path / "walk.teacher.zarr")
    assert store_uri("s3://bucket/stores/", "walk", kind="refined") == "s3://bucket/stores/walk.refined.zarr"
    for name in ("../../etc/passwd", "a/b", "/abs", ".hidden"):
        uri = Path(store_uri(str(tmp_path), name))
        assert uri.parent == tmp_path and not uri.name.startswith(".") and uri.name.endswith(".teacher.zarr")
    for name in ("..", "", "/"):
        with pytest.raises(InputError, match="rename the video"):
            store_uri(str(tmp_path), name)
    with pytest.raises(ValueError):
        store_uri(str(tmp_path), "walk", kind="best")


def test_names_parse_back_for_every_kind_and_location(tmp_path):
    for root in (str(tmp_path), "s3://bucket/stores"):
        for kind in ("teacher", "refined"):
            uri = store_uri(root, "kitchen.take-2", kind)
            assert video_name(uri) == "kitchen.take-2" and store_kind(uri) == kind
            assert video_name(uri + "/") == "kitchen.take-2"
    assert video_name("/data/clip.gt.zarr") == "clip.gt" and store_kind("/data/clip.gt.zarr") is None
    one_model = refined_uri(store_uri("s3://b/s", "clip"), "a1b2")
    assert one_model == store_uri("s3://b/s", "clip", "refined", model_id="a1b2") == "s3://b/s/clip.refined-a1b2.zarr"
    assert video_name(one_model) == "clip" and store_kind(one_model) == "refined" and model_of(one_model) == "a1b2"
    assert refined_uri(store_uri("s3://b/s", "clip"), "c3") != one_model  # each model has a store of its own
    with pytest.raises(ValueError, match="does not end in .teacher.zarr"):
        refined_uri(store_uri(str(tmp_path), "clip", "refined"), "a1b2")
    with pytest.raises(ValueError, match="model id"):
        store_uri(str(tmp_path), "clip", "refined", model_id="../x")


def test_list_stores_lists_one_kind_sorted(tmp_path):
    for name in ("b", "a"):
        for kind in ("teacher", "refined"):
            Path(store_uri(str(tmp_path), name, kind)).mkdir()
    (tmp_path / "a.gt.zarr").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    assert list_stores(str(tmp_path), "teacher") == [store_uri(str(tmp_path), n) for n in ("a", "b")]
    assert list_stores(str(tmp_path), "refined") == [store_uri(str(tmp_path), n, "refined") for n in ("a", "b")]
    assert list_stores(str(tmp_path / "missing")) == []


def test_long_names_are_capped_and_stay_distinct(tmp_path):
    short = "k" * MAX_NAME
    assert safe_name(short) == short  # names that fit keep their store
    one, two = "x" * 250 + "-take1", "x" * 250 + "-take2"  # the same first MAX_NAME characters
    assert len(safe_name(one)) == len(safe_name(two)) == MAX_NAME and safe_name(one) != safe_name(two)
    assert safe_name(one) == safe_name(one)  # deterministic: a rerun finds its store
    leaf = Path(refined_uri(store_uri(str(tmp_path), one), "f" * 16)).name
    assert len(f".{leaf}.lock".encode()) <= 255  # the longest file name a store brings


def test_two_videos_that_would_share_a_store_are_refused():
    require_distinct_names({"/v/a.mp4": "a", "/v/b.mp4": "b"})
    with pytest.raises(InputError, match=r"^/v/a b.mp4 and /v/a_b.mp4 would both write the store a_b.teacher.zarr"):
        require_distinct_names({"/v/a b.mp4": "a b", "/v/a_b.mp4": "a_b"})
    with pytest.raises(InputError, match="/one/clip.mp4 and /two/clip.mp4"):
        require_distinct_names({"/one/clip.mp4": "clip", "/two/clip.mp4": "clip"})
