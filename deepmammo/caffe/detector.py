"""pycaffe's caffe.Detector: a TEST-phase Net that classifies windows of images (R-CNN style):
each window is cropped (with `context_pad` pixels of surrounding context, padded with the mean
where the context leaves the image), warped to the input size and run through the net.

detect_selective_search needs R-CNN's Selective Search code (selective_search_ijcv_with_python,
which runs MATLAB); without it, compute the windows elsewhere and call detect_windows.
"""
import os

import numpy as np

from deepmammo.caffe import io as caffe_io
from deepmammo.caffe.classifier import _transformer
from deepmammo.caffe.net import TEST, Net


class Detector(Net):
    """Net(model_file, TEST, weights=pretrained_file) for windowed detection.

    mean, input_scale, raw_scale, channel_swap: as the Transformer's setters; context_pad:
    pixels of the net's input that are context around the window (R-CNN's 16).
    """

    def __init__(self, model_file, pretrained_file, mean=None, input_scale=None,
                 raw_scale=None, channel_swap=None, context_pad=None):
        Net.__init__(self, model_file, TEST, weights=pretrained_file)
        self.transformer = _transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.configure_crop(context_pad)

    def detect_windows(self, images_windows):
        """[{'window', 'prediction', 'filename'}] for each window (ymin, xmin, ymax, xmax) of
        each (image filename, windows) pair, in order."""
        images_windows = list(images_windows)
        window_inputs = []
        for image_fname, windows in images_windows:
            image = caffe_io.load_image(image_fname).astype(np.float32)
            for window in windows:
                window_inputs.append(self.crop(image, window))
        in_ = self.inputs[0]
        caffe_in = np.zeros((len(window_inputs), window_inputs[0].shape[2])
                            + self.blobs[in_].data.shape[2:], dtype=np.float32)
        for ix, window_in in enumerate(window_inputs):
            caffe_in[ix] = self.transformer.preprocess(in_, window_in)
        out = self.forward_all(**{in_: caffe_in})
        predictions = out[self.outputs[0]]
        detections = []
        ix = 0
        for image_fname, windows in images_windows:
            for window in windows:
                detections.append({"window": window, "prediction": predictions[ix],
                                   "filename": image_fname})
                ix += 1
        return detections

    def detect_selective_search(self, image_fnames):
        """detect_windows over Selective Search proposals (needs
        selective_search_ijcv_with_python and MATLAB)."""
        try:
            import selective_search_ijcv_with_python as selective_search
        except ImportError:
            raise RuntimeError(
                "detect_selective_search needs R-CNN's Selective Search "
                "(selective_search_ijcv_with_python, which runs MATLAB), and it is not "
                "installed; compute the windows another way and call "
                "detect_windows([(filename, windows), ...])") from None
        image_fnames = [os.path.abspath(f) for f in image_fnames]
        windows_list = selective_search.get_windows(image_fnames, cmd="selective_search_rcnn")
        return self.detect_windows(zip(image_fnames, windows_list))

    def crop(self, im, window):
        """The window (ymin, xmin, ymax, xmax) of an (H, W, K) image; with context_pad, the
        window grown so that context_pad pixels of the net's input are context, warped to
        the input size, the parts outside the image filled with the mean."""
        crop = im[window[0]:window[2], window[1]:window[3]]
        if not self.context_pad:
            return crop
        box = np.array(window, dtype=np.float64)
        crop_size = self.blobs[self.inputs[0]].width      # a square input
        scale = crop_size / (1.0 * crop_size - self.context_pad * 2)
        half_h = (box[2] - box[0] + 1) / 2.0
        half_w = (box[3] - box[1] + 1) / 2.0
        center = (box[0] + half_h, box[1] + half_w)
        scaled_dims = scale * np.array((-half_h, -half_w, half_h, half_w))
        box = np.round(np.tile(center, 2) + scaled_dims)
        full_h = box[2] - box[0] + 1
        full_w = box[3] - box[1] + 1
        scale_h = crop_size / full_h
        scale_w = crop_size / full_w
        pad_y = int(round(max(0, -box[0]) * scale_h))     # the part outside the image
        pad_x = int(round(max(0, -box[1]) * scale_w))
        im_h, im_w = im.shape[:2]
        box = np.clip(box, 0.0, [im_h, im_w, im_h, im_w])
        clip_h = box[2] - box[0] + 1
        clip_w = box[3] - box[1] + 1
        if not (clip_h > 0 and clip_w > 0):
            raise ValueError(f"window {tuple(window)} lies outside the {im_h}x{im_w} image")
        crop_h = int(round(clip_h * scale_h))
        crop_w = int(round(clip_w * scale_w))
        if pad_y + crop_h > crop_size:
            crop_h = crop_size - pad_y
        if pad_x + crop_w > crop_size:
            crop_w = crop_size - pad_x
        box = box.astype(int)
        context_crop = im[box[0]:box[2], box[1]:box[3]]
        context_crop = caffe_io.resize_image(context_crop, (crop_h, crop_w))
        crop = np.ones(self.crop_dims, dtype=np.float32) * self.crop_mean
        crop[pad_y:(pad_y + crop_h), pad_x:(pad_x + crop_w)] = context_crop
        return crop

    def configure_crop(self, context_pad):
        """Set the crop size (the input's, as H x W x K) and the context padding; with
        context, the mean in the unprocessed image's space pads the crops."""
        in_ = self.inputs[0]
        tpose = self.transformer.transpose[in_]
        inv_tpose = [tpose[t] for t in tpose]
        self.crop_dims = np.array(self.blobs[in_].data.shape[1:])[inv_tpose]
        self.context_pad = context_pad
        if not self.context_pad:
            return
        transpose = self.transformer.transpose.get(in_)
        channel_order = self.transformer.channel_swap.get(in_)
        raw_scale = self.transformer.raw_scale.get(in_)
        mean = self.transformer.mean.get(in_)
        if mean is not None:
            inv_transpose = [transpose[t] for t in transpose]
            crop_mean = mean.copy().transpose(inv_transpose)
            if channel_order is not None:
                order = list(channel_order)
                crop_mean = crop_mean[:, :, [order.index(i) for i in range(crop_mean.shape[2])]]
            if raw_scale is not None:
                crop_mean /= raw_scale
            self.crop_mean = crop_mean
        else:
            self.crop_mean = np.zeros(self.crop_dims, dtype=np.float32)
