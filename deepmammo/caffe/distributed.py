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
processes already exist, possibly on several nodes, and join with env://. The first lines of
rank 0's log name the workers, their backend, devices and hosts (Caffe's "Using GPUs 0, 1").

pycaffe's multi-process names are here too: `has_nccl()` (True where torch.distributed is
available: this engine's multi-worker training needs no NCCL build), `NCCL(solver, uid)` with
`new_uid()` and `bcast()`, `set_multiprocess`, `solver_count` / `solver_rank`.
"""
import os
import socket

import numpy as np
import torch
import torch.distributed as dist

# pycaffe's Caffe::solver_count / solver_rank: how many workers train together and which one this
# process is. The Data layer reads them to keep its share of the records at TRAIN.
_workers = {"count": 1, "rank": 0, "multiprocess": False}


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


def set_multiprocess(value):
    """pycaffe's set_multiprocess: the workers are processes (pycaffe's multi-GPU scripts set
    it in each); kept for multiprocess(), as each worker here is a process anyway."""
    _workers["multiprocess"] = bool(value)


def multiprocess():
    return _workers["multiprocess"]


def has_nccl():
    """pycaffe's has_nccl: whether multi-worker training is available. Caffe answers whether
    it was built with NCCL; here workers join through torch.distributed (NCCL on GPUs, gloo
    on CPUs), so the answer is whether torch.distributed is available."""
    return dist.is_available()


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


class NCCL:
    """pycaffe's caffe.NCCL: joins this process to the other workers' group and averages the
    gradients of `solver`'s train net over them.

        uid = caffe.NCCL.new_uid()                # once, in the parent process
        # in each worker process: set_solver_count(n), set_solver_rank(r), then
        nccl = caffe.NCCL(solver, uid)
        nccl.bcast()                              # rank 0's weights to every worker
        solver.add_callback(nccl)                 # averages the gradients before each update
        if solver.param.layer_wise_reduce:
            solver.net.after_backward(nccl)       # ... layer by layer during backward
        solver.step(solver.param.max_iter)

    The group is torch.distributed's (NCCL for a net on a GPU, gloo on the CPU), of
    solver_count() workers, this one solver_rank(). Unlike Caffe, when layer-wise reduce is
    on but the net was not given the NCCL object, on_gradients_ready averages the whole
    gradient instead of leaving the workers' gradients apart.
    """

    def __init__(self, solver, uid):
        self.solver = solver
        if not dist.is_initialized():
            if isinstance(uid, bytes):
                uid = uid.decode()
            backend = "nccl" if solver.net.device.type == "cuda" else "gloo"
            dist.init_process_group(backend, init_method=uid, rank=solver_rank(),
                                    world_size=solver_count())
        self.world_size = dist.get_world_size()
        self._all = GradientAllReduce(solver)
        self._by_layer = None
        self._reduced_layerwise = False

    @staticmethod
    def new_uid():
        """An id the workers of one group share (bytes, as pycaffe's): here the rendezvous
        address of a free local port, so the workers must run on this machine."""
        return f"tcp://127.0.0.1:{free_port()}".encode()

    def bcast(self):
        """Give every worker rank 0's weights (Caffe's NCCL::Broadcast)."""
        for blob in self.solver.net.learnable_params:
            dist.broadcast(blob.tdata, src=0)

    def on_start(self):
        self._reduced_layerwise = False

    def on_gradients_ready(self):
        if not self._reduced_layerwise:
            self._all.on_gradients_ready()
        self._reduced_layerwise = False

    def run(self, layer):
        """After layer `layer`'s backward: average the gradients of the learnable blobs no
        lower layer adds to (a shared blob is averaged once its last user is done)."""
        if not self.solver.param.layer_wise_reduce:
            return
        if self._by_layer is None:
            self._by_layer = _blobs_by_last_user(self.solver.net)
        scale = float(np.float32(1) / np.float32(self.world_size))
        for blob in self._by_layer.get(layer, ()):
            diff = blob.tdiff
            dist.all_reduce(diff, op=dist.ReduceOp.SUM)
            diff.mul_(scale)
        self._reduced_layerwise = True

    def close(self):
        """Leave the group (not in pycaffe: there it ends with the process)."""
        if dist.is_initialized():
            dist.destroy_process_group()


def _blobs_by_last_user(net):
    """{layer index: learnable blobs whose lowest-indexed user (the last one backward reaches)
    is that layer}."""
    learnable = {id(b) for b in net.learnable_params}
    first_user = {}
    for i, layer in enumerate(net.layers):
        for blob in layer.blobs:
            if id(blob) in learnable and id(blob) not in first_user:
                first_user[id(blob)] = (i, blob)
    out = {}
    for i, blob in first_user.values():
        out.setdefault(i, []).append(blob)
    return out


def describe_workers(world_size, backend, device):
    """Log lines naming every worker (rank, device, host, process): collective, every worker
    calls it; the lines are returned on every rank."""
    mine = (socket.gethostname(), os.getpid(), device)
    everyone = [None] * world_size
    dist.all_gather_object(everyone, mine)
    lines = [f"Using {world_size} workers, backend {backend}"]
    for r, (host, pid, dev) in enumerate(everyone):
        lines.append(f"Worker {r}: {dev} on host {host} (pid {pid})")
    return lines


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
        if gpus:
            index = gpus[rank % len(gpus)]
            device = f"GPU {index} ({torch.cuda.get_device_name(index)})"
        else:
            device = "CPU"
        for line in describe_workers(world_size, backend, device):
            if rank == 0:
                log.info(line)
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
