"""The committed stubs must be exactly what recommender.proto generates.

The generators stamp their own versions into the stubs (grpcio-tools' GRPC_GENERATED_VERSION,
protoc's protobuf version): those stamps are the minimum runtimes the committed stubs ask for
(pyproject's grpcio and protobuf floors), not proto content, so a newer grpcio-tools from the
registry does not make the stubs stale.
"""

import re
from pathlib import Path

from protos.generate import OUTPUTS, generate

REPO = Path(__file__).resolve().parents[2]
GENERATOR_STAMPS = (
    re.compile(r"^GRPC_GENERATED_VERSION = .*$", re.M),
    re.compile(r"^# Protobuf Python Version: .*$", re.M),
    re.compile(r"ValidateProtobufRuntimeVersion\([^)]*\)"),
)


def without_generator_stamps(text: str) -> str:
    for stamp in GENERATOR_STAMPS:
        text = stamp.sub("<generator version>", text)
    return text


def test_committed_stubs_match_the_proto(tmp_path):
    generate(tmp_path)
    for name in OUTPUTS:
        fresh = without_generator_stamps((tmp_path / "protos" / name).read_text())
        committed = without_generator_stamps((REPO / "protos" / name).read_text())
        assert fresh == committed, f"protos/{name} is stale: run python protos/generate.py"


def test_a_changed_message_is_still_caught(tmp_path):
    generate(tmp_path)
    name = next(n for n in OUTPUTS if n.endswith("_pb2.py"))
    fresh = without_generator_stamps((tmp_path / "protos" / name).read_text())
    assert without_generator_stamps(fresh.replace("Recommend", "Recommand", 1)) != fresh


def test_service_contract_names():
    from protos import recommender_pb2

    service = recommender_pb2.DESCRIPTOR.services_by_name["Recommender"]
    assert service.full_name == "recserve.v1.Recommender"
    assert {"Recommend", "RecommendBatch", "Embed", "GetInfo", "UpsertItems", "DeleteItems",
            "RecordInteractions", "Reload"} <= set(service.methods_by_name)
