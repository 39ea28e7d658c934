"""What the crash test's writers were told: acknowledged writes, and the one each left in doubt.

Each writer thread owns its items and users, and writes them one call at a time, so for
every item the acknowledged history is a simple sequence. When the server is killed the
call in flight has no answer: it is "in doubt" and may or may not have been logged. The
check after a restart accepts either outcome (all of the call or none of it) and then
records which one happened.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field

import grpc

from protos import recommender_pb2 as pb

EVENTS = ("view", "click", "purchase")
MAX_EVENTS_PER_USER = 40  # below the server's live history length (50), so nothing is evicted


@dataclass
class Pending:
    """A call sent without an answer: the state it would leave if it was applied."""

    variants: dict[str, int | None] = field(default_factory=dict)  # item -> variant after
    events: list[tuple[str, str]] = field(default_factory=list)  # (user, item) appended


@dataclass
class WriterLedger:
    name: str
    item_ids: list[str]
    users: list[str]
    variants: dict[str, int | None] = field(default_factory=dict)  # None: not listed (never / deleted)
    histories: dict[str, list[str]] = field(default_factory=dict)
    pending: Pending | None = None
    pending_call: tuple[str, object] | None = None  # (method, request with its request_id)
    next_variant: int = 1

    def listed(self) -> set[str]:
        return {item for item, variant in self.variants.items() if variant is not None}


class CrashWriter(threading.Thread):
    """Upserts, deletes and interactions on its own items until the server stops answering."""

    def __init__(self, ledger: WriterLedger, address: str, seed: int, sequences: list[int],
                 stop: threading.Event) -> None:
        super().__init__(name=f"crash-writer-{ledger.name}", daemon=True)
        self.ledger, self.address, self.stop_event = ledger, address, stop
        self.rng = random.Random(seed)
        self.sequences = sequences  # shared: list.append is atomic
        self.acknowledged = 0
        self.bug: str | None = None

    def run(self) -> None:
        with grpc.insecure_channel(self.address) as channel:
            from protos import recommender_pb2_grpc as pb_grpc

            stub = pb_grpc.RecommenderStub(channel)
            while not self.stop_event.is_set():
                call = self._next_call(stub)
                if call is None:
                    continue
                method, request, pending = call
                try:
                    response = getattr(stub, method)(request, timeout=10)
                except grpc.RpcError as err:
                    if err.code() == grpc.StatusCode.INVALID_ARGUMENT:
                        self.bug = f"refused a valid write: {err.details()}"
                    self.ledger.pending = pending  # in doubt; this writer is done for the round
                    self.ledger.pending_call = (method, request)
                    return
                self.sequences.append(response.sequence)
                self._acknowledge(pending)

    def _request_id(self) -> str:
        return f"{self.ledger.name}-{self.rng.getrandbits(64):016x}"

    def _acknowledge(self, pending: Pending) -> None:
        self.ledger.variants.update(pending.variants)
        for user, item in pending.events:
            self.ledger.histories.setdefault(user, []).append(item)
        self.acknowledged += 1

    def _next_call(self, stub):
        ledger, rng = self.ledger, self.rng
        kind = rng.choice(("upsert", "upsert", "delete", "interact", "interact"))
        listed = sorted(ledger.listed())
        if kind == "upsert":
            chosen = rng.sample(ledger.item_ids, rng.randint(1, 3))
            pending = Pending()
            items = []
            for item_id in chosen:
                variant, ledger.next_variant = ledger.next_variant, ledger.next_variant + 1
                pending.variants[item_id] = variant
                items.append(pb.Item(item_id=item_id, title=f"{item_id} v{variant}",
                                     text=f"crash test item {item_id} variant {variant}",
                                     attributes={"owner": ledger.name, "variant": str(variant)}))
            return "UpsertItems", pb.UpsertItemsRequest(items=items, request_id=self._request_id()), pending
        if kind == "delete" and listed:
            chosen = rng.sample(listed, min(len(listed), rng.randint(1, 2)))
            pending = Pending(variants={item_id: None for item_id in chosen})
            return "DeleteItems", pb.DeleteItemsRequest(item_ids=chosen, request_id=self._request_id()), pending
        users = [u for u in ledger.users if len(ledger.histories.get(u, ())) < MAX_EVENTS_PER_USER]
        if kind == "interact" and listed and users:
            user = rng.choice(users)
            chosen = [rng.choice(listed) for _ in range(rng.randint(1, 3))]
            pending = Pending(events=[(user, item_id) for item_id in chosen])
            events = [pb.Interaction(user_id=user, item_id=item_id, event=rng.choice(EVENTS))
                      for item_id in chosen]
            return ("RecordInteractions",
                    pb.RecordInteractionsRequest(events=events, request_id=self._request_id()), pending)
        return None


def new_ledgers(workers: int, items_per_writer: int, users_per_writer: int,
                bundle_ids: list[str]) -> list[WriterLedger]:
    """Disjoint items (new ids plus a slice of the bundle's) and users for each writer."""
    ledgers = []
    for w in range(workers):
        name = f"w{w}"
        owned_bundle = bundle_ids[w::workers][:max(1, items_per_writer // 4)]
        items = [f"crash-{name}-{i}" for i in range(items_per_writer)] + owned_bundle
        ledger = WriterLedger(name, items, [f"crash-{name}-user-{u}" for u in range(users_per_writer)])
        ledger.variants = {item_id: None for item_id in items}
        ledgers.append(ledger)
    return ledgers
