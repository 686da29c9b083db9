"""Worker processes for the multi-process tests of the pycaffe API (they must be importable by
name: torch.multiprocessing starts each worker afresh)."""


def nccl_worker(rank, runs, uid, steps):
    """pycaffe's multi-GPU recipe (python/train.py), on gloo CPU workers: solver_count/rank,
    a solver, NCCL(solver, uid), bcast, the NCCL object as solver callback and, with
    layer_wise_reduce, as the net's after_backward hook. `runs`: (solver path, result path)
    pairs trained one after the other in the same group; rank 0 saves each run's weights."""
    import deepmammo.caffe as caffe
    caffe.set_mode_cpu()
    caffe.set_solver_count(2)
    caffe.set_solver_rank(rank)
    caffe.set_multiprocess(True)
    nccl = None
    for solver_path, result in runs:
        solver = caffe.SGDSolver(solver_path)
        nccl = caffe.NCCL(solver, uid)           # the group is joined once, then reused
        nccl.bcast()
        solver.add_callback(nccl)
        if solver.param.layer_wise_reduce:
            solver.net.after_backward(nccl)
        solver.step(steps)
        if rank == 0:
            solver.net.save(result)
    nccl.close()
