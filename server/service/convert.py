"""Protobuf messages <-> domain objects (RecommendQuery, RecommendResult)."""

from __future__ import annotations

from protos import recommender_pb2 as pb
from server.requests import RecommendQuery, RecommendResult, StageTimings


def query_from_proto(request: pb.RecommendRequest) -> RecommendQuery:
    f = request.filter
    return RecommendQuery(
        query=request.query,
        user_id=request.user_id,
        history=tuple(request.history),
        k=request.k,
        attribute_equals=dict(f.attribute_equals),
        attribute_in={name: tuple(values.values) for name, values in f.attribute_in.items()},
        exclude_item_ids=tuple(f.exclude_item_ids),
        exclude_interacted=f.exclude_interacted,
        diversity=request.diversity,
        explain=request.explain,
    )


def timings_to_proto(t: StageTimings) -> pb.Timings:
    return pb.Timings(queue_us=t.queue_us, encode_us=t.encode_us, retrieve_us=t.retrieve_us,
                      rank_us=t.rank_us, total_us=t.total_us)


def result_to_proto(result: RecommendResult) -> pb.RecommendResponse:
    items = []
    for item in result.items:
        scored = pb.ScoredItem(item_id=item.item_id, title=item.title, score=item.score,
                               retrieval_score=item.retrieval_score, reason=item.reason,
                               sources=item.sources)
        if item.contributions:
            scored.contributions.extend(
                pb.FeatureContribution(feature=c.feature, value=c.value, weight=c.weight,
                                       contribution=c.contribution)
                for c in item.contributions
            )
        items.append(scored)
    return pb.RecommendResponse(items=items, bundle_version=result.bundle_version,
                                timings=timings_to_proto(result.timings))
