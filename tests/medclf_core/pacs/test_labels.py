"""Study and instance labels that tell each one apart (no PACS needed): UIDs ending alike, instances that
share an Instance Number (two "image 3" were one option of the page's multiselect, one image never classified)."""

from __future__ import annotations

from medclf_core.pacs.client import StudySummary
from medclf_core.pacs.labels import instance_labels, study_labels, uid_tails


def test_studies_whose_uids_end_alike_get_distinct_labels():
    uids = ["1.2.826.0.1.3680043.2.1125.1.11608962641993666019702920539307059.5457",
            "1.2.826.0.1.3680043.2.1125.1.22608962641993666019702920539307059.5457",
            "1.2.826.0.1.3680043.2.1125.1.33608962641993666019702920539307059.5457"]
    studies = [StudySummary(u, "20040826", ("CR",), 1, 1) for u in uids]
    labels = study_labels(studies)
    assert len(set(labels)) == 3, labels
    assert all(label.startswith("2004-08-26 · CR · 1 series, 1 instance(s) · …") for label in labels)
    for label, uid in zip(labels, uids, strict=True):
        assert uid.endswith(label.split("…")[1])
    # a list without such neighbours keeps the short end
    one = study_labels([StudySummary(uids[0], None, (), None, None)])
    assert one == ["no date · ? · …059.5457"]


def test_instances_with_the_same_number_get_distinct_labels():
    records = [{"sop_instance_uid": "1.2.3.4.100.1", "instance_number": 3},
               {"sop_instance_uid": "1.2.3.4.200.1", "instance_number": 3},
               {"sop_instance_uid": "1.2.3.4.300.1", "instance_number": 5},
               {"sop_instance_uid": "1.2.3.4.400.1", "instance_number": None}]
    labels = instance_labels(records)
    assert labels == ["image 3 (…4.100.1)", "image 3 (…4.200.1)", "image 5", "image 4"]
    twice = instance_labels([records[0], records[0]])  # the same instance listed twice: still two options
    assert len(set(twice)) == 2


def test_uid_tails_grow_only_as_far_as_needed():
    assert uid_tails(["1.9.77", "1.8.77"], min_len=2) == ["9.77", "8.77"]
    assert uid_tails(["1.2.3"], min_len=8) == ["1.2.3"]
    assert uid_tails(["5.55", "55"], min_len=1) == ["5.55", "55"]
