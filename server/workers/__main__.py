"""The supervisor on its own: `recserve serve --workers N` execs this after reading its configs,
so the process that only watches workers does not keep the whole server imported (67 -> ~20 MB).

    python -m server.workers '{"config": {...SupervisorConfig...}, "argv": [...], "log_level": "INFO"}'
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from server.workers.supervisor import SupervisorConfig, WorkerSupervisor


def main(payload: str) -> int:
    spec = json.loads(payload)
    fields = dict(spec["config"])
    if fields.get("live_dir") is not None:
        fields["live_dir"] = Path(fields["live_dir"])
    fields["backoff_s"] = tuple(fields.get("backoff_s", SupervisorConfig.backoff_s))
    logging.basicConfig(level=spec.get("log_level", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return WorkerSupervisor(SupervisorConfig(**fields), spec["argv"]).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
