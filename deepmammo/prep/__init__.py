"""The dataset stage: cases.csv -> mass crops -> patient split -> Caffe LMDBs + mean image.

    deepmammo crops CASES.csv --padding fixed:50|proportional:2 --out CROPS   (crops.py)
    deepmammo split CROPS --out splits.csv --seed S [--mode code]          (split.py)
    deepmammo lmdb CROPS --splits splits.csv --augment paper|code|none --out OUT  (build.py)

Modules: crops.py (padding geometry, border clipping, 16-bit PNG crops), split.py (by patient,
balanced val/test), greylevel.py (the documented 16 -> 8 bit mapping), augment.py (rotations,
resizing, crops), build.py (LMDBs, mean.binaryproto, manifest.csv, build.json), images.py (image
IO and the cases API), parallel.py (workers), commands.py (the CLI).
"""
