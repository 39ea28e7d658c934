"""The inference process: one ONNX Runtime session per model, fed by every serving worker.

    python -m server.inference --socket PATH

Workers connect over a unix socket and hand token ids over in shared memory
(server/inference/protocol.py). Each loop turn takes every request that is ready, from all
workers, merges those with the same model and padded length into one batch (the GPU wants
few large batches, not one small batch per front end), runs it, and writes each worker's
rows back into that worker's region. Sessions are loaded on a worker's first hello and
dropped when no worker uses them any more (a reload moves every worker to the new model).
"""

from __future__ import annotations

import argparse
import json
import logging
import mmap
import os
import selectors
import signal
import socket
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from export.runtime import EncoderRuntime, RuntimeConfig
from server.inference import protocol as wire

log = logging.getLogger(__name__)


@dataclass
class _Model:
    runtime: EncoderRuntime
    users: int = 0


@dataclass
class _Worker:
    sock: socket.socket
    model_key: str | None = None
    region: mmap.mmap | None = None
    pending: list[tuple[int, int]] = field(default_factory=list)  # (batch, seq_len) read, not answered


class InferenceProcess:
    def __init__(self, socket_path: str, config: RuntimeConfig | None = None, worker_batch_tokens: int = 4096,
                 gpu_merge: int = 8) -> None:
        self.socket_path = socket_path
        self.config = config or RuntimeConfig()
        # Merged batches: on CPU no larger than one worker's own batch (bigger batches do not run
        # faster per row there, and four workers' warm-ups merged grew the process by 150 MB of
        # arena); on a GPU up to gpu_merge workers' batches, which is what it is for.
        self.worker_batch_tokens = worker_batch_tokens
        self.gpu_merge = gpu_merge
        self.models: dict[str, _Model] = {}
        self.selector = selectors.DefaultSelector()
        self.stopping = False
        self.batches_run = 0
        self.rows_run = 0

    def serve(self) -> None:
        Path(self.socket_path).unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.socket_path + ".tmp")
        listener.listen(128)
        os.replace(self.socket_path + ".tmp", self.socket_path)  # the path appears only when it accepts
        self.selector.register(listener, selectors.EVENT_READ, None)
        try:
            while not self.stopping:
                ready = []
                for key, _ in self.selector.select(timeout=0.5):
                    if key.data is None:
                        self._accept(listener)
                    elif self._read(key.data):
                        ready.append(key.data)
                if ready:
                    self._run(ready)
        finally:
            listener.close()
            Path(self.socket_path).unlink(missing_ok=True)

    # ---- connections -----------------------------------------------------------------------

    def _accept(self, listener: socket.socket) -> None:
        sock, _ = listener.accept()
        worker = _Worker(sock)
        try:
            self._hello(worker)
        except Exception as exc:  # noqa: BLE001 - a bad hello closes that connection only
            log.warning("inference hello refused: %s", exc)
            _send_json(sock, {"error": str(exc)})
            sock.close()
            return
        self.selector.register(sock, selectors.EVENT_READ, worker)

    def _hello(self, worker: _Worker) -> None:
        hello = json.loads(wire.recv_line(worker.sock))
        path = os.path.realpath(hello["model"])
        key = json.dumps([path, hello.get("quantization")], sort_keys=True)
        model = self.models.get(key)
        if model is None:
            runtime = EncoderRuntime(path, self.config, quantization=hello.get("quantization"))
            model = self.models[key] = _Model(runtime)
            log.info("inference: loaded %s (%s, %d threads)", path, runtime.provider, runtime.threads)
        model.users += 1
        worker.model_key = key
        rt = model.runtime
        _send_json(worker.sock, {"dim": rt.dim, "provider": rt.provider, "threads": rt.threads,
                                 "input_names": rt.input_names})

    def _read(self, worker: _Worker) -> bool:
        """Read one doorbell (and a new region, if one came with it). False: the worker left."""
        try:
            data, fds, _, _ = socket.recv_fds(worker.sock, wire.REQUEST.size, 1)
            if not data:
                raise ConnectionError("closed")
            if len(data) < wire.REQUEST.size:
                data += wire.recv_exact(worker.sock, wire.REQUEST.size - len(data))
        except (ConnectionError, OSError):
            self._close(worker)
            return False
        if fds:
            if worker.region is not None:
                worker.region.close()
            size = os.fstat(fds[0]).st_size
            worker.region = mmap.mmap(fds[0], size)
            os.close(fds[0])
        worker.pending.append(wire.REQUEST.unpack(data))
        return True

    def _close(self, worker: _Worker) -> None:
        self.selector.unregister(worker.sock)
        worker.sock.close()
        if worker.region is not None:
            worker.region.close()
        model = self.models.get(worker.model_key)
        if model is not None:
            model.users -= 1
            if model.users == 0:  # no worker serves this model any more (they reloaded)
                del self.models[worker.model_key]

    # ---- batches ---------------------------------------------------------------------------

    def _run(self, ready: list[_Worker]) -> None:
        groups: dict[tuple[str, int], list[_Worker]] = {}
        for worker in ready:
            batch, seq_len = worker.pending[-1]
            groups.setdefault((worker.model_key, seq_len), []).append(worker)
        for (key, seq_len), workers in groups.items():
            runtime = self.models[key].runtime
            max_rows = self.merged_tokens(runtime) // seq_len
            while workers:
                take, rows = [], 0
                while workers and (not take or rows + workers[0].pending[-1][0] <= max_rows):
                    take.append(workers.pop(0))
                    rows += take[-1].pending[-1][0]
                self._run_merged(runtime, take, seq_len)

    def merged_tokens(self, runtime: EncoderRuntime) -> int:
        """Most padded tokens in one merged batch for this session's device."""
        on_gpu = not runtime.provider.startswith("CPU")
        return self.worker_batch_tokens * (self.gpu_merge if on_gpu else 1)

    def _run_merged(self, runtime: EncoderRuntime, workers: list[_Worker], seq_len: int) -> None:
        names = runtime.input_names
        views = [wire.input_views(memoryview(w.region), names, w.pending[-1][0], seq_len) for w in workers]
        feeds = views[0] if len(views) == 1 else \
            {name: np.concatenate([v[name] for v in views]) for name in names}
        try:
            embeddings = runtime.run(feeds)
            error = b""
        except Exception as exc:  # noqa: BLE001 - the batch fails; the workers decide what next
            embeddings, error = None, str(exc).encode()[:4096]
        start = 0
        for worker in workers:
            batch, _ = worker.pending.pop()
            if embeddings is not None:
                out = wire.output_view(memoryview(worker.region), len(names), batch, seq_len, runtime.dim)
                out[:] = embeddings[start:start + batch]
                start += batch
            try:
                worker.sock.sendall(wire.ANSWER.pack(wire.FAILED if error else wire.OK, len(error)) + error)
            except OSError:
                self._close(worker)
        self.batches_run += 1
        self.rows_run += start


def _send_json(sock: socket.socket, value: dict) -> None:
    sock.sendall(json.dumps(value).encode() + b"\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.inference", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--socket", required=True, help="unix socket path the workers connect to")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s inference %(levelname)s %(message)s")
    from server.batching.batcher import BatcherConfig

    process = InferenceProcess(args.socket, RuntimeConfig(), BatcherConfig().max_batch_tokens)

    def stop(_signum, _frame) -> None:
        process.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    process.serve()
    return 0
