"""Training on several workers (GPUs, or CPU processes) with Caffe's multi-GPU meaning.

Caffe's NCCL/P2PSync (parallel.cpp): every worker runs the same solver on its own batches (the
Data layer of worker r keeps the records whose index % workers == r), and in the solver's
`on_gradients_ready` callback, after the iter_size forward/backward passes and before the update,
the diffs of all learnable blobs are summed over the workers and scaled by 1/workers. Each worker
then applies the same update to the same weights, so the weights stay equal without being sent.
Rank 0 alone tests, displays and snapshots; each worker seeds with random_seed + rank; on resume
every worker restores the same solverstate. With workers of batch B this is one worker with
batch B and iter_size = workers (the tested equivalence).

Workers are processes joined by torch.distributed: NCCL on GPUs, gloo on CPU. `--gpu all` spawns
one per visible GPU on this machine; under `torchrun` (RANK/WORLD_SIZE in the environment) the
processes already exist, possibly on several nodes, and join with env://.
"""
import os
import socket

import numpy as np
import torch
import torch.distributed as dist

# pycaffe's Caffe::solver_count / solver_rank: how many workers train together and which one this
# process is. The Data layer reads them to keep its share of the records at TRAIN.
_workers = {"count": 1, "rank": 0}


def solver_count():
    return _workers["count"]


def solver_rank():
    return _workers["rank"]


def set_solver_count(count):
    if int(count) < 1:
        raise ValueError(f"solver_count must be >= 1, got {count}")
    _workers["count"] = int(count)


def set_solver_rank(rank):
    _workers["rank"] = int(rank)


def shard(records, count, rank):
    """Caffe's DataLayer::Skip: worker `rank` of `count` keeps the records whose running index
    (counted across wraps) is congruent to its rank, so each worker sees its own batches."""
    for index, record in enumerate(records):
        if index % count == rank:
            yield record


class GradientAllReduce:
    """Solver callback: average the learnable blobs' diffs over all workers (Caffe's NCCL)."""

    def __init__(self, solver):
        self.solver = solver
        self.world_size = dist.get_world_size()

    def on_start(self):
        pass

    def on_gradients_ready(self):
        params = self.solver.net.learnable_params
        if not params:
            return
        # One flat buffer: one collective per iteration, as Caffe's (non layer-wise) reduce.
        flat = torch.cat([b.tdiff.reshape(-1) for b in params])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.mul_(float(np.float32(1) / np.float32(self.world_size)))
        offset = 0
        for blob in params:
            diff = blob.tdiff
            n = diff.numel()
            diff.copy_(flat[offset:offset + n].view_as(diff))
            offset += n

    def broadcast_weights(self):
        """Give every worker rank 0's weights and history (Caffe's NCCL::Broadcast)."""
        for blob in self.solver.net.learnable_params:
            data = blob.tdata
            dist.broadcast(data, src=0)
        for h in self.solver.history:
            dist.broadcast(h, src=0)


def environment_rank():
    """(rank, world_size, local_rank) when launched by torchrun, else None."""
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        return (int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                int(os.environ.get("LOCAL_RANK", 0)))
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _set_engine_workers(rank, world_size):
    """Tell the engine's Data layers which share of the records this worker reads."""
    set_solver_count(world_size)
    set_solver_rank(rank)


def run_worker(rank, world_size, job, init_method=None, backend=None):
    """Body of one worker: join the group, build the solver, train, leave.

    `job` is a dict: solver (path), weights, snapshot, device ("cpu" or a GPU index per rank),
    log (path for rank 0), steps (None: solve to max_iter), result (a path: rank 0 writes its
    final weights there as a caffemodel, for tests).
    """
    from deepmammo.caffe.solvers import get_solver
    from deepmammo.caffe.train_log import TrainLog

    gpus = job.get("gpus")
    if backend is None:
        backend = "nccl" if gpus else "gloo"
    if gpus:
        torch.cuda.set_device(gpus[rank % len(gpus)])
    if not dist.is_initialized():
        dist.init_process_group(backend, init_method=init_method or "env://", rank=rank,
                                world_size=world_size)
    try:
        _set_engine_workers(rank, world_size)
        if gpus:
            _use_gpu(gpus[rank % len(gpus)])
        log = TrainLog(job.get("log") if rank == 0 else None, echo=rank == 0)
        solver = get_solver(job["solver"], rank=rank, world_size=world_size, log=log,
                            weights=job.get("weights"))
        if job.get("snapshot"):
            solver.restore(job["snapshot"])
        sync = GradientAllReduce(solver)
        sync.broadcast_weights()
        solver.callbacks.append(sync)
        steps = job.get("steps")
        if steps is not None:
            solver.step(steps)
        elif rank == 0:
            solver.solve()
        else:
            solver.step(solver.param.max_iter - solver.iter)
        dist.barrier()
        if rank == 0 and job.get("result"):
            from deepmammo.atomic import write_bytes
            write_bytes(job["result"], solver.net.to_net_param().SerializeToString())
        log.close()
    finally:
        dist.destroy_process_group()
        _set_engine_workers(0, 1)


def _spawn_entry(rank, world_size, job, init_method, backend):
    run_worker(rank, world_size, job, init_method=init_method, backend=backend)


def spawn(world_size, job, backend=None):
    """Run `world_size` workers on this machine (one per GPU, or CPU processes) and wait."""
    import torch.multiprocessing as mp
    init_method = f"tcp://127.0.0.1:{free_port()}"
    mp.spawn(_spawn_entry, args=(world_size, job, init_method, backend), nprocs=world_size,
             join=True)


def _use_gpu(index):
    import deepmammo.caffe as caffe
    if hasattr(caffe, "set_device"):
        caffe.set_device(index)
    if hasattr(caffe, "set_mode_gpu"):
        caffe.set_mode_gpu()
