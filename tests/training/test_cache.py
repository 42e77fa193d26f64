"""The slice cache holds exactly the predictor's preprocessed slices, minus edge and empty slices."""

import numpy as np
import pytest
from helpers import phantom, save_nifti, tiny_config

from mood_vqad.config import BRAIN
from mood_vqad.inference.slicing import extract_slices, normalise, slice_positions
from mood_vqad.io import CaseError
from mood_vqad.training.cache import SliceCache, prepare_cache

REGION = tiny_config(BRAIN, edge_slices=4).region


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    arrays = [phantom((32, 32, 32), seed=0), phantom((32, 36, 40), seed=1)]
    arrays[1][:, :, 12:15] = 0  # three empty slices inside the range
    for i, array in enumerate(arrays):
        save_nifti(folder / f"v{i}.nii.gz", array)
    (folder / "broken.nii.gz").write_bytes(b"\x1f\x8b not a volume")
    return folder, arrays


def test_cache_holds_the_predictors_slices_without_edges_and_empty_ones(volumes, tmp_path):
    folder, arrays = volumes
    meta = prepare_cache(folder, tmp_path, REGION, workers=1, progress=False)
    cache = SliceCache.open(tmp_path)
    assert [s["file"] for s in meta["skipped"]] == ["broken.nii.gz"]
    assert cache.region == REGION and cache.slices.dtype == np.float16 and len(cache) == meta["slices"]
    for vid, array in enumerate(arrays):
        n = array.shape[2]
        kept = np.array([z for z in range(4, n - 4) if array[:, :, z].max() > 0])
        assert meta["volumes"][vid]["slices"] == len(kept)
        rows = cache.volume_ids == vid
        expected = extract_slices(normalise(array, REGION), REGION, kept).numpy()
        np.testing.assert_allclose(cache.slices[rows].astype(np.float32), expected, rtol=2e-3, atol=2e-3)
        np.testing.assert_array_equal(cache.positions[rows], slice_positions(kept, n).numpy())


def test_parallel_reading_gives_the_same_cache(volumes, tmp_path):
    folder, _ = volumes
    prepare_cache(folder, tmp_path / "one", REGION, workers=1, progress=False)
    prepare_cache(folder, tmp_path / "two", REGION, workers=2, progress=False)
    one, two = SliceCache.open(tmp_path / "one"), SliceCache.open(tmp_path / "two")
    np.testing.assert_array_equal(one.slices, two.slices)
    np.testing.assert_array_equal(one.volume_ids, two.volume_ids)


def test_a_folder_without_usable_volumes_fails_and_leaves_no_staging_file(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "broken.nii.gz").write_bytes(b"nope")
    with pytest.raises(CaseError, match="no volume gave a training slice"):
        prepare_cache(data, tmp_path / "cache", REGION, progress=False)
    assert list((tmp_path / "cache").iterdir()) == []
