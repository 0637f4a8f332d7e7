"""One job on several ranks (``EngineJob.world_size`` > 1), with ``torch.distributed``.

The process that runs ``run_job`` is rank 0: it starts ranks 1..N-1 as processes of its own
(``torch.multiprocessing``, spawned), which meet it at a TCP store on the loopback; gloo joins
CPU ranks, NCCL GPU ranks (one GPU each). Every rank runs the same recipe on the same data, the
student wrapped in DDP or sharded with FSDP2's ``fully_shard`` (``spec.distributed.strategy``);
only rank 0 reports (the others get ``NullCallbacks``) and writes artifacts.

The ranks live inside rank 0's sandbox, in its process group: the worker's kill reaches them, and
each asks the kernel to kill it when rank 0 dies. A rank that dies is noticed by rank 0 at its
next collective (gloo: the peer's socket closes; NCCL: a watcher aborts the process group), and
the job ends with ``RankLost`` (``rank_lost``) once every rank process is gone.
"""

import contextlib
import ctypes
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.distributed.fsdp import FSDPModule, fully_shard

from jobspec import requirements
from worker.engine.errors import (
    RANK_LOST,
    DeviceUnavailable,
    EngineError,
    JobCancelled,
    UnsupportedInput,
)
from worker.engine.job import Callbacks, EngineJob, EngineResult, NullCallbacks
from worker.engine.runs import torch_device

# How long the ranks may take to start (import torch, load the teacher) and meet, and how long a
# collective waits on a rank that is alive but silent. A rank that dies is noticed at once.
RENDEZVOUS = timedelta(minutes=10)
COLLECTIVE = timedelta(minutes=30)
# Once a collective has failed, how long rank 0 waits for the rank that broke it to be seen gone.
LOST_GRACE_SECONDS = 30.0
STARTING_TICK_SECONDS = 0.05  # while the ranks start: how often the store is looked at
_PR_SET_PDEATHSIG = 1


class RankLost(EngineError):
    code = RANK_LOST


@dataclass
class Gang:
    """This process's place among the job's ranks."""

    rank: int
    world_size: int
    device: torch.device
    strategy: str  # ddp | fsdp
    scratch: Path  # shared by the ranks: an unpacked checkpoint, the ranks' error reports
    # gloo, on the CPU: decisions and loss sums, so that a GPU step never waits for them.
    control: Any
    saves: int = 0  # checkpoints written so far (each its own folder under scratch)

    @property
    def leader(self) -> bool:
        return self.rank == 0

    # -- the model --------------------------------------------------------------------------------

    def wrap(self, model: nn.Module) -> nn.Module | None:
        """Make ``model`` train across the ranks. fsdp shards it in place (returns None); ddp
        returns the wrapper the training forward pass calls, ``model`` itself staying plain."""
        if self.strategy == "fsdp":
            self.shard(model)
            return None
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def shard(self, model: nn.Module) -> nn.Module:
        """fsdp: ``model``'s parameters sharded over the ranks, in place, one block at a time;
        ddp: ``model`` as it is (every rank holds it whole)."""
        if self.strategy == "fsdp":
            for layer in _layers(model):
                fully_shard(layer)
            fully_shard(model)
        return model

    def resharded(self, model: nn.Module) -> None:
        """After a forward pass without backward (validation): fsdp leaves the root module's
        parameters gathered until a backward pass, in place of the shards the optimizer holds;
        shard them again."""
        if isinstance(model, FSDPModule):
            model.reshard()

    def whole(self, model: nn.Module, build: Callable[[], nn.Module]) -> nn.Module:
        """``model`` as one plain module on every rank (fsdp: its shards gathered into a fresh
        ``build()``; collective); ddp's model is plain already."""
        if self.strategy != "fsdp":
            return model
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
        )

        weights = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
        plain = build().to(self.device)
        plain.load_state_dict(weights)
        return plain

    # -- the data ---------------------------------------------------------------------------------

    def share(self, batch: torch.Tensor) -> tuple[torch.Tensor, float]:
        """This rank's rows of one global batch (the indices ``batch``), and the weight of its
        loss: its share of the batch's rows times the world size, so that the ranks' averaged
        gradients are the whole batch's. A batch with fewer rows than ranks leaves some ranks
        none: they run one of its rows at weight 0, as every rank must take part in the step."""
        mine = torch.tensor_split(batch, self.world_size)[self.rank]
        if len(mine) == 0:
            return batch[:1], 0.0
        return mine, len(mine) * self.world_size / len(batch)

    # -- agreement --------------------------------------------------------------------------------

    def agree(self, decision: bool) -> bool:
        """Rank 0's ``decision``, on every rank (whether to report, whether to stop)."""
        flag = torch.tensor([int(decision)])
        dist.broadcast(flag, src=0, group=self.control)
        return bool(flag.item())

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` summed over the ranks (on the CPU, through the control group)."""
        total = values.detach().to("cpu", torch.float64)
        dist.all_reduce(total, group=self.control)
        return total

    def from_leader(self, tensor: torch.Tensor | None) -> torch.Tensor | None:
        """Rank 0's ``tensor`` (or None) on every rank, on this rank's device; the other ranks
        pass None. For tables rank 0 computes once (the teacher's outputs)."""
        header = torch.zeros(1 + 1 + 8, dtype=torch.int64)
        if self.leader:
            if tensor is None:
                header[0] = -1
            else:
                header[0] = _WIRE_DTYPES.index(tensor.dtype)
                header[1] = tensor.dim()
                header[2 : 2 + tensor.dim()] = torch.tensor(tensor.shape)
        dist.broadcast(header, src=0, group=self.control)
        if header[0] < 0:
            return None
        dtype, ndim = _WIRE_DTYPES[int(header[0])], int(header[1])
        shape = header[2 : 2 + ndim].tolist()
        cpu = (
            tensor.cpu() if self.leader and tensor is not None else torch.empty(shape, dtype=dtype)
        )
        dist.broadcast(cpu, src=0, group=self.control)
        return tensor if self.leader and tensor is not None else cpu.to(self.device)


_WIRE_DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64, torch.int64]


def _layers(model: nn.Module) -> list[nn.Module]:
    """The blocks FSDP shards one by one (so that one block's parameters are gathered at a
    time): the entries of the model's largest ``ModuleList`` (a transformer's layers), else each
    module that holds parameters of its own (an MLP's or a CNN's layers)."""
    lists = [list(m) for m in model.modules() if isinstance(m, nn.ModuleList)]
    if lists:
        return max(lists, key=len)
    return [
        m for m in model.modules() if m is not model and next(m.parameters(False), None) is not None
    ]


def check_supported(job: EngineJob) -> None:
    """What a job on several ranks cannot do yet (``jobspec.requirements.check_distributed``,
    which the API checks at submit too), refused before any rank starts."""
    try:
        requirements.check_distributed(job.spec)
    except requirements.SpecConflict as e:
        raise UnsupportedInput(e.message, code=e.code) from None
    if job.devices and len(job.devices) != job.world_size:
        raise DeviceUnavailable(
            f"The job has {job.world_size} ranks but {len(job.devices)} devices "
            f"({', '.join(job.devices)}); it needs one device per rank."
        )


def rank_device(job: EngineJob, rank: int) -> torch.device:
    """Rank ``rank``'s device: ``job.devices[rank]``, else the job's device (cuda: GPU ``rank``)."""
    if job.devices:
        return torch_device(job.devices[rank])
    device = torch_device(job.device)
    if device.type == "cuda":
        return torch_device(f"cuda:{rank}")
    return device


# -- starting, watching and ending the ranks -----------------------------------------------------


def run_gang(
    job: EngineJob,
    callbacks: Callbacks,
    run: Callable[[EngineJob, Callbacks, Gang], EngineResult | None],
) -> EngineResult:
    """``run`` (the recipe) on ``job.world_size`` ranks, this process being rank 0; raises what
    rank 0 raises, or the error of the rank that failed first, or ``RankLost``."""
    check_supported(job)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # the sandbox has a loopback and no more
    os.environ.setdefault("NCCL_SOCKET_IFNAME", "lo")
    scratch = Path(tempfile.mkdtemp(prefix="distill-gang-"))
    store = dist.TCPStore(
        "127.0.0.1", 0, job.world_size, is_master=True, timeout=RENDEZVOUS, wait_for_workers=False
    )
    ranks = mp.start_processes(
        _rank_main,
        args=(job, store.port, scratch, os.getpid(), torch.get_num_threads()),
        nprocs=job.world_size - 1,
        join=False,
        start_method="spawn",
    )
    watch = _Watch(ranks.processes)
    try:
        _await_ranks(store, ranks.processes)
        with joined(job, 0, store, scratch) as gang:
            watch.gang = gang
            result = run(job, callbacks, gang)
        assert result is not None  # rank 0 finishes the job
        return result
    except (EngineError, JobCancelled):
        raise  # rank 0's own: every rank meets the same checks, the same stop
    except BaseException as e:
        explained = watch.explain(scratch)
        if explained is None:
            raise
        raise explained from e
    finally:
        watch.end()
        shutil.rmtree(scratch, ignore_errors=True)


def _await_ranks(store: Any, processes: list[Any]) -> None:
    """Until every rank has started (imported torch and this code, reached the store), or one
    has ended: then raise ``RankLost`` rather than wait out the rendezvous."""
    keys = [f"started/{rank}" for rank in range(1, len(processes) + 1)]
    sentinels = [p.sentinel for p in processes]
    while not store.check(keys):
        if wait(sentinels, timeout=STARTING_TICK_SECONDS):
            raise RankLost("A rank of this job ended while starting; the worker's log says why.")


@contextlib.contextmanager
def joined(job: EngineJob, rank: int, store: Any, scratch: Path) -> Iterator[Gang]:
    device = rank_device(job, rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend,
        store=store,
        rank=rank,
        world_size=job.world_size,
        timeout=COLLECTIVE,
        device_id=device if device.type == "cuda" else None,
    )
    try:
        control = dist.new_group(backend="gloo", timeout=COLLECTIVE) if backend != "gloo" else None
        strategy = job.spec.distributed.strategy
        yield Gang(rank, job.world_size, device, strategy, scratch, control)
    finally:
        dist.destroy_process_group()


def _rank_main(
    index: int, job: EngineJob, port: int, scratch: Path, parent: int, threads: int
) -> None:
    """Rank ``index + 1``, with rank 0's number of threads: dies with rank 0; reports an error
    in a JSON file for rank 0."""
    _die_with_parent(parent)
    rank = index + 1
    torch.set_num_threads(threads)
    from worker.engine.run import run_recipe

    store = dist.TCPStore("127.0.0.1", port, job.world_size, is_master=False, timeout=RENDEZVOUS)
    store.set(f"started/{rank}", "1")
    try:
        with joined(job, rank, store, scratch) as gang:
            run_recipe(job, NullCallbacks(), gang)
    except JobCancelled:
        return
    except EngineError as e:
        _report(scratch, rank, e.code, e.message)
        sys.exit(1)
    except BaseException as e:
        traceback.print_exc()
        _report(scratch, rank, "internal_error", f"Rank {rank} failed: {e!r}")
        sys.exit(1)


def _die_with_parent(parent: int) -> None:
    """SIGKILL from the kernel when rank 0 (the thread that spawned this rank) ends; an orphan
    already (rank 0 died before this ran) exits at once."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def _report(scratch: Path, rank: int, code: str, message: str) -> None:
    path = scratch / f"rank-{rank}.json"
    path.write_text(json.dumps({"rank": rank, "code": code, "message": message[:2000]}))


class _Watch:
    """Rank 0's view of the other ranks: a thread that waits for any of them to end, and on a
    GPU aborts the process group when one dies (NCCL would wait out its timeout)."""

    def __init__(self, processes: list[Any]):
        self.processes = processes
        self.gang: Gang | None = None
        self.ended = threading.Event()  # some rank has ended, well or not
        self._thread = threading.Thread(target=self._wait, name="ranks", daemon=True)
        self._thread.start()

    def _wait(self) -> None:
        wait([p.sentinel for p in self.processes])
        self.ended.set()
        lost = any(p.exitcode not in (None, 0) for p in self.processes)
        gang = self.gang
        if lost and gang is not None and gang.device.type == "cuda":
            with contextlib.suppress(Exception):
                dist.distributed_c10d._abort_process_group()

    def explain(self, scratch: Path) -> EngineError | None:
        """Why rank 0's collective failed: a rank's own error, or a rank lost; None when every
        rank is still there (the failure was rank 0's)."""
        self.ended.wait(LOST_GRACE_SECONDS)
        done = wait([p.sentinel for p in self.processes], timeout=0)
        for process in self.processes:
            if process.sentinel in done:  # it has closed its files: its exit status is moments away
                process.join()
        reported = {int(p.stem.split("-")[1]): p for p in scratch.glob("rank-*.json")}
        ended = [i + 1 for i, p in enumerate(self.processes) if p.exitcode not in (None, 0)]
        # A rank that ended without a word was lost (the others' errors followed from that);
        # else the first rank that failed with an error of its own says why.
        lost = [rank for rank in ended if rank not in reported]
        if not lost and reported:
            report = json.loads(reported[min(reported)].read_text())
            return EngineError(str(report["message"]), code=str(report["code"]))
        if not lost:
            return None
        how = [_how(self.processes[r - 1].exitcode) for r in lost]
        return RankLost(
            f"Rank {lost[0]} of {len(self.processes) + 1} ended ({how[0]}) in the middle of "
            "training, so the job stopped; it can run again from its last checkpoint."
        )

    def end(self) -> None:
        """Kill whatever rank is left, and reap them all."""
        for process in self.processes:
            if process.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
        for process in self.processes:
            process.join()
        self._thread.join()


def _how(exitcode: int) -> str:
    if exitcode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-exitcode).name}"
        return f"killed by signal {-exitcode}"
    return f"exit status {exitcode}"
