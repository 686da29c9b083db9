"""Caffe's files, read and written without the engine (this package never imports torch):

    prototxt     net and solver text files (NetParameter, SolverParameter)
    caffemodel   trained weights (current and V1 files, upgraded in memory by `upgrade`)
    solverstate  a solver's history, for resuming
    binaryproto  the mean file
    blobproto    BlobProto <-> ndarray, shared by the three above
    datum        one LMDB record (Datum)
    lmdb_io      LMDB databases of Datum

The schema they share is deepmammo.caffe.proto (pycaffe's `caffe.proto.caffe_pb2`).
Data preparation and evaluation read and write these files; only training and inference load
the engine.
"""
