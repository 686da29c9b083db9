"""DeepMammo: a Caffe-faithful reproduction of Jain & Levy, "DeepMammo: Breast Mass
Classification using Deep Convolutional Neural Networks"."""
from setuptools import find_packages, setup

setup(
    name="deepmammo",
    version="0.1.0",
    description="Caffe-faithful reproduction of DeepMammo (Jain & Levy): DDSM mass crops, "
                "Caffe prototxt models on PyTorch or real BVLC Caffe, paper tables and figures",
    packages=find_packages(include=["deepmammo", "deepmammo.*"]),
    package_data={"deepmammo.caffe.proto": ["*.proto"]},
    python_requires=">=3.10",
    install_requires=[
        "numpy>=1.24",
        "scipy>=1.10",
        "pillow>=9.0",
        "lmdb>=1.4",
        "protobuf>=4.21,<8",
        "pydicom>=2.4",
        "imagecodecs>=2023.1.23",
        "matplotlib>=3.6",
        "pyyaml>=6.0",
        "tqdm>=4.60",
        "pydot>=1.4",      # caffe.draw (also needs Graphviz's `dot`: apt-get install graphviz)
        # 2.13.0 (the CPU build on this machine's disk) satisfies this range.
        "torch>=2.1,<2.14",
    ],
    extras_require={
        "test": ["pytest>=7", "scikit-learn>=1.2", "hypothesis>=6.80", "ruff>=0.5"],
        # What real pycaffe imports (python/caffe/io.py needs scikit-image).
        "caffe": ["scikit-image>=0.21", "six"],
    },
    entry_points={"console_scripts": ["deepmammo=deepmammo.cli:main"]},
)
