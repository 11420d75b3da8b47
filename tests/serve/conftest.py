"""Fixtures for the search service: a small collection indexed with the tiny model."""

from __future__ import annotations

import shutil

import pytest

from serve_helpers import BASE_URL, N_IMAGES, build_index, write_images


@pytest.fixture(scope="module")
def shared_collection(tmp_path_factory, tiny_encoder):
    """(folder, index path) built once per module; tests that change files use ``collection``."""
    root = tmp_path_factory.mktemp("serve")
    write_images(root / "photos", N_IMAGES)
    build_index(root / "photos", tiny_encoder, root / "photos.idx")
    return root / "photos", root / "photos.idx"


@pytest.fixture
def collection(tmp_path, tiny_encoder, shared_collection):
    """A private copy of the collection and its index (rebuilt: the index records absolute paths)."""
    folder = tmp_path / "photos"
    shutil.copytree(shared_collection[0], folder)
    build_index(folder, tiny_encoder, tmp_path / "photos.idx")
    return folder, tmp_path / "photos.idx"


@pytest.fixture(scope="module")
def client(shared_collection, tiny_encoder):
    from fastapi.testclient import TestClient

    from calibclip.serve import create_app

    with TestClient(create_app(shared_collection[1], encoder=tiny_encoder), base_url=BASE_URL) as c:
        yield c
