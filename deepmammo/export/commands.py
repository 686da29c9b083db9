"""`deepmammo export`: a snapshot and its deploy net to ONNX, TorchScript or a PyTorch module."""


def register(subparsers):
    """Add `export` to the `deepmammo` parser."""
