"""`deepmammo classify`: a trained run applied to new masses.

    model.py     the run: deploy net, the snapshot chosen on validation (or one named), its
                 validation threshold, the dataset's input recipe and the training mean
    inputs.py    what the user gives (one mammogram with its mass as a mask, a DDSM .OVERLAY or
                 a box; a cases CSV; a folder of crops) turned into records, through the same
                 functions `crops` and `lmdb` use (deepmammo.prep.recipe)
    classify.py  the forward pass (either engine; `--oversample`: Caffe's 10 crops), the
                 decision, the table and the CSV/JSON, saliency overlays
"""
