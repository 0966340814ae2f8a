"""Data loading: bundled sets, site CSV/NPZ files, and the errors a site operator sees."""

from __future__ import annotations

import numpy as np
import pytest

from fedvault.common.data import Standardizer, check_fits, load_dataset, stratified_split
from fedvault.common.errors import DataError


def test_bundled_sets_have_expected_shapes():
    digits = load_dataset("digits")
    assert digits.input_shape == (1, 8, 8) and digits.num_classes == 10 and len(digits) == 1797
    cancer = load_dataset("breast_cancer")
    assert cancer.input_shape == (30,) and cancer.num_classes == 2


def _write_csv(path, text):
    path.write_text(text)
    return str(path)


def test_csv_with_label_column_loads(tmp_path):
    src = _write_csv(tmp_path / "site.csv", "age,bp,outcome\n50,120,1\n61,140,0\n33,110,1\n")
    ds = load_dataset(src, label_column="outcome")
    assert ds.input_shape == (2,)
    assert ds.y.tolist() == [1, 0, 1]
    assert ds.x[1].tolist() == [61.0, 140.0]


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(str(tmp_path / "nope.csv"))


def test_missing_label_column_lists_columns(tmp_path):
    src = _write_csv(tmp_path / "s.csv", "a,b\n1,2\n")
    with pytest.raises(DataError, match=r"no label column 'label'.*\['a', 'b'\]"):
        load_dataset(src)


def test_non_numeric_value_names_line_and_column(tmp_path):
    src = _write_csv(tmp_path / "s.csv", "a,label\n1,0\nhigh,1\n")
    with pytest.raises(DataError, match=r"line 3, column 'a': 'high' is not a number"):
        load_dataset(src)


def test_missing_value_is_refused(tmp_path):
    src = _write_csv(tmp_path / "s.csv", "a,label\nnan,0\n")
    with pytest.raises(DataError, match="not a finite number"):
        load_dataset(src)


def test_ragged_row_is_refused(tmp_path):
    src = _write_csv(tmp_path / "s.csv", "a,b,label\n1,2,0\n1,1\n")
    with pytest.raises(DataError, match="line 3: 2 values"):
        load_dataset(src)


def test_label_outside_model_classes_is_a_class_mismatch(tmp_path):
    src = _write_csv(tmp_path / "s.csv", "a,label\n1,0\n2,5\n")
    with pytest.raises(DataError, match="label 5 does not fit the run's model, which has 2"):
        load_dataset(src, num_classes=2)


def test_fractional_labels_are_refused(tmp_path):
    src = _write_csv(tmp_path / "s.csv", "a,label\n1,0.5\n")
    with pytest.raises(DataError, match="whole numbers"):
        load_dataset(src)


def test_npz_round_trip_and_errors(tmp_path):
    good = tmp_path / "d.npz"
    np.savez(good, x=np.ones((4, 1, 8, 8)), y=np.array([0, 1, 2, 3]))
    ds = load_dataset(str(good), num_classes=10)
    assert ds.input_shape == (1, 8, 8) and ds.num_classes == 10
    bad = tmp_path / "bad.npz"
    np.savez(bad, features=np.ones((2, 3)), y=np.array([0, 1]))
    with pytest.raises(DataError, match="arrays named 'x'"):
        load_dataset(str(bad))
    mismatched = tmp_path / "m.npz"
    np.savez(mismatched, x=np.ones((3, 2)), y=np.array([0, 1]))
    with pytest.raises(DataError, match="same length"):
        load_dataset(str(mismatched))


def test_unknown_extension_is_refused(tmp_path):
    with pytest.raises(DataError, match="Unknown dataset"):
        load_dataset(str(tmp_path / "data.parquet"))


def test_check_fits_reports_shape_mismatch():
    ds = load_dataset("breast_cancer")
    with pytest.raises(DataError, match=r"shaped \(30,\) but the run's model expects \(29,\)"):
        check_fits(ds, input_shape=(29,), num_classes=2)


def test_split_keeps_every_class_and_is_disjoint():
    ds = load_dataset("digits")
    train, test = stratified_split(ds, test_fraction=0.2, seed=1)
    assert len(train) + len(test) == len(ds)
    assert set(np.unique(test.y)) == set(range(10))
    assert abs(len(test) / len(ds) - 0.2) < 0.01
    again, _ = stratified_split(ds, test_fraction=0.2, seed=1)
    assert np.array_equal(train.y, again.y)


def test_standardizer_uses_training_statistics_only():
    train = np.array([[0.0, 5.0], [2.0, 5.0]], dtype=np.float32)
    scaler = Standardizer.fit(train)
    out = scaler.transform(np.array([[4.0, 5.0]], dtype=np.float32))
    # mean 1, std 1 for column 0; column 1 is constant and maps to 0 instead of dividing by 0
    assert out.tolist() == [[3.0, 0.0]]


def test_images_are_standardized_per_channel():
    x = np.zeros((4, 2, 3, 3), dtype=np.float32)
    x[:, 0] = np.arange(4, dtype=np.float32)[:, None, None]  # channel 0 varies, channel 1 is 0
    out = Standardizer.fit(x).transform(x)
    assert out.shape == x.shape
    assert abs(out[:, 0].mean()) < 1e-6 and abs(out[:, 0].std() - 1) < 1e-5
    assert (out[:, 1] == 0).all()
