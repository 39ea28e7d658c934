"""The committed stubs must be exactly what recommender.proto generates."""

from pathlib import Path

from protos.generate import OUTPUTS, generate

REPO = Path(__file__).resolve().parents[2]


def test_committed_stubs_match_the_proto(tmp_path):
    generate(tmp_path)
    for name in OUTPUTS:
        fresh = (tmp_path / "protos" / name).read_text()
        committed = (REPO / "protos" / name).read_text()
        assert fresh == committed, f"protos/{name} is stale: run python protos/generate.py"


def test_service_contract_names():
    from protos import recommender_pb2

    service = recommender_pb2.DESCRIPTOR.services_by_name["Recommender"]
    assert service.full_name == "recserve.v1.Recommender"
    assert {"Recommend", "RecommendBatch", "Embed", "GetInfo", "UpsertItems", "DeleteItems",
            "RecordInteractions", "Reload"} <= set(service.methods_by_name)
