"""Preprocessing for evaluation equals Caffe's TEST-phase Data layer; batching and TTA."""

import numpy as np
import pytest

from deepmammo.caffe.formats.binaryproto import write_mean
from deepmammo.caffe.formats.datum import array_to_datum
from deepmammo.caffe.formats.lmdb_io import LMDBWriter, lmdb_key
from deepmammo.evaluate.predict import forward_probs, preprocess


def _caffe_test_transform(image, crop, mean, scale):
    """Caffe's DataTransformer at TEST, element by element (data_transformer.cpp's indexing)."""
    c, h, w = image.shape
    h_off, w_off = (h - crop) // 2, (w - crop) // 2
    out = np.zeros((c, crop, crop), np.float32)
    for ch in range(c):
        for y in range(crop):
            for x in range(crop):
                out[ch, y, x] = (float(image[ch, h_off + y, w_off + x])
                                 - mean[ch, h_off + y, w_off + x]) * scale
    return out


def test_preprocess_matches_caffe_indexing(rng):
    image = rng.randint(0, 256, (3, 8, 11)).astype(np.uint8)  # odd margins: offsets floor
    mean = rng.rand(3, 8, 11).astype(np.float32) * 255
    got = preprocess(image, 5, mean, scale=0.25)
    np.testing.assert_allclose(got, _caffe_test_transform(image, 5, mean, 0.25), rtol=1e-6)
    mirrored = preprocess(image, 5, mean, scale=0.25, mirror=True)
    np.testing.assert_array_equal(mirrored, got[:, :, ::-1])
    # mean_value: one per channel; no crop keeps the record whole.
    np.testing.assert_allclose(preprocess(image, None, [1, 2, 3]),
                               image.astype(np.float32) - np.array([1, 2, 3]).reshape(3, 1, 1))


def test_preprocess_errors_name_the_problem(rng):
    image = rng.randint(0, 256, (3, 6, 6)).astype(np.uint8)
    with pytest.raises(ValueError, match="smaller than the crop"):
        preprocess(image, 7)
    with pytest.raises(ValueError, match="uncropped record size"):
        preprocess(image, 4, np.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match="mean_value needs"):
        preprocess(image, 4, [1.0, 2.0])
    with pytest.raises(ValueError, match="channels, height, width"):
        preprocess(image[0], 4)


def test_preprocess_equals_real_caffe_data_layer(tmp_path, rng, real_caffe):
    images = rng.randint(0, 256, (3, 3, 9, 11)).astype(np.uint8)
    mean = (rng.rand(3, 9, 11) * 255).astype(np.float32)
    db = str(tmp_path / "db")
    with LMDBWriter(db) as w:
        for i, im in enumerate(images):
            w.put_datum(lmdb_key(i, "r%d" % i), array_to_datum(im, i % 2))
    write_mean(mean, str(tmp_path / "mean.binaryproto"))
    proto = tmp_path / "data.prototxt"
    proto.write_text(
        'layer { name: "d" type: "Data" top: "data" top: "label" include { phase: TEST }\n'
        '  transform_param { crop_size: 5 mean_file: "%s" scale: 0.25 }\n'
        '  data_param { source: "%s" batch_size: 3 backend: LMDB } }\n'
        % (tmp_path / "mean.binaryproto", db))
    net = real_caffe.Net(str(proto), real_caffe.TEST)
    net.forward()
    ours = np.stack([preprocess(im, 5, mean, 0.25) for im in images])
    np.testing.assert_allclose(net.blobs["data"].data, ours, rtol=1e-6, atol=1e-5)


class _Blob:
    def __init__(self, shape):
        self.data = np.zeros(shape, np.float32)
        self.diff = np.zeros(shape, np.float32)

    def reshape(self, *shape):
        self.data = np.zeros(shape, np.float32)
        self.diff = np.zeros(shape, np.float32)


class LeftRightNet:
    """A stand-in with pycaffe's API: p(malignant) from left-half minus right-half brightness,
    so mirroring changes the answer. Records every batch size it saw."""

    outputs = ["prob"]

    def __init__(self, batch=4, crop=6):
        self.blobs = {"data": _Blob((batch, 3, crop, crop)), "prob": _Blob((batch, 2))}
        self.batches = []

    def reshape(self):
        self.blobs["prob"].reshape(self.blobs["data"].data.shape[0], 2)

    def forward(self):
        x = self.blobs["data"].data
        half = x.shape[3] // 2
        z = (x[..., :half].mean(axis=(1, 2, 3)) - x[..., half:].mean(axis=(1, 2, 3))) / 50.0
        p = 1.0 / (1.0 + np.exp(-z))
        self.blobs["prob"].data[...] = np.stack([1 - p, p], axis=1)
        self.batches.append(x.shape[0])
        return {"prob": self.blobs["prob"].data}


def test_forward_probs_batches_and_mirror_tta(rng):
    images = rng.randint(0, 256, (10, 3, 8, 8)).astype(np.uint8)
    net = LeftRightNet(batch=4)
    plain = forward_probs(net, images, batch_size=4)
    assert net.batches == [4, 4, 2] and plain.shape == (10, 2)
    flipped = forward_probs(LeftRightNet(), images[:, :, :, ::-1], batch_size=4)
    both = forward_probs(LeftRightNet(), images, batch_size=4, tta="mirror")
    np.testing.assert_allclose(both, (plain + flipped) / 2, rtol=1e-6)
    with pytest.raises(ValueError, match="augmentation"):
        forward_probs(LeftRightNet(), images, tta="rotate")


def test_raw_scores_pass_through_softmax(rng):
    class ScoreNet(LeftRightNet):
        def forward(self):
            out = super().forward()
            out["prob"][...] = np.log(out["prob"]) * 3.0 - 1.0  # scores, not probabilities
            return out
    images = rng.randint(0, 256, (5, 3, 8, 8)).astype(np.uint8)
    probs = forward_probs(ScoreNet(), images)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-6)


def test_dataset_index_takes_patients_from_the_manifest_or_crops_table(tmp_path):
    from deepmammo.evaluate.predict import read_dataset_index
    (tmp_path / "manifest.csv").write_text("key,split,crop_id,label\nk0,val,c0,1\nk1,val,c1,0\n")
    (tmp_path / "crops.csv").write_text("crop_id,patient_id,case_id,side,view\n"
                                        "c0,P1,P1_A,LEFT,CC\nc1,P2,P2_A,LEFT,MLO\n")
    index = read_dataset_index(str(tmp_path / "manifest.csv"))
    assert index["k0"]["patient_id"] == "P1" and index["k1"]["view"] == "MLO"
    (tmp_path / "crops.csv").write_text("crop_id,patient_id\nc0,P1\n")
    with pytest.raises(ValueError, match="names crop 'c1'"):
        read_dataset_index(str(tmp_path / "manifest.csv"))
    (tmp_path / "m2.csv").write_text("key,crop_id,patient_id,case_id,label\nk0,c0,Q,Q_1,1\n")
    assert read_dataset_index(str(tmp_path / "m2.csv"))["k0"]["patient_id"] == "Q"


def test_test_transform_reads_the_test_data_layer(tmp_path):
    from deepmammo.evaluate.predict import test_transform
    path = tmp_path / "train_val.prototxt"
    path.write_text(
        'layer { name: "d" type: "Data" top: "data" include { phase: TRAIN }\n'
        '  transform_param { crop_size: 8 mirror: true mean_file: "train.binaryproto" } }\n'
        'layer { name: "d" type: "Data" top: "data" include { phase: TEST }\n'
        '  transform_param { crop_size: 6 mean_value: 104 mean_value: 117 mean_value: 123\n'
        '                    scale: 0.5 } }\n')
    assert test_transform(str(path)) == {"crop_size": 6, "mean_file": None,
                                         "mean_value": [104.0, 117.0, 123.0], "scale": 0.5}
    path.write_text('layer { name: "d" type: "Data" top: "data" include { phase: TRAIN } }\n')
    with pytest.raises(ValueError, match="no Data layer for the TEST phase"):
        test_transform(str(path))
