"""Words for a PACS's studies and instances that tell each one apart, without a patient name or ID.

A study is shown by its date, modalities, counts and the end of its Study Instance UID; an instance by its
Instance Number. Neither is unique on its own: UIDs made by one device often share their last digits, and two
instances of a series may carry the same Instance Number. A widget that keys its options by their words (as
Streamlit's multiselect does) would then show one option twice and never the other, so each label here gets as
much of the UID's end as it takes to differ from every other label of the list.

>>> uid_tails(["1.2.3.100.059.5457", "1.2.3.200.059.5457"], min_len=8)
['100.059.5457', '200.059.5457']
>>> instance_labels([{"sop_instance_uid": "1.2.3.4.5.77", "instance_number": 3},
...                  {"sop_instance_uid": "1.2.3.4.5.88", "instance_number": 3},
...                  {"sop_instance_uid": "1.2.3.4.5.99", "instance_number": 4}])
['image 3 (…4.5.77)', 'image 3 (…4.5.88)', 'image 4']
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

STUDY_TAIL = 8  # characters of a Study Instance UID's end shown at least
INSTANCE_TAIL = 6  # characters of a SOP Instance UID's end added when two instances share their number


def uid_tails(uids: Sequence[str], min_len: int = STUDY_TAIL) -> list[str]:
    """Each UID's shortest end (at least ``min_len`` characters, not starting with a dot) that no other UID of
    ``uids`` ends with;
    the whole UID when it is shorter or another UID ends with all of it (a duplicate)."""
    out = []
    for i, uid in enumerate(uids):
        others = [u for j, u in enumerate(uids) if j != i]
        n = min(min_len, len(uid))
        while n < len(uid) and any(o.endswith(uid[-n:]) for o in others):
            n += 1
        if 0 < n < len(uid) and uid[-n] == ".":  # an end that starts with a digit reads better
            n += 1
        out.append(uid[-n:] if n > 0 else uid)
    return out


def _ellipsis(uid: str, tail: str) -> str:
    return tail if tail == uid else f"…{tail}"


def study_labels(studies: Sequence) -> list[str]:
    """One label per study (a :class:`~medclf_core.pacs.client.StudySummary`): ``date · modalities · counts ·
    …end of the UID``, the end long enough that no two studies of the list read the same."""
    tails = uid_tails([s.study_uid for s in studies], STUDY_TAIL)
    out = []
    for s, tail in zip(studies, tails, strict=True):
        date = s.study_date or "no date"
        if len(date) == 8 and date.isdigit():
            date = f"{date[:4]}-{date[4:6]}-{date[6:]}"
        counts = ", ".join(f"{n} {w}" for n, w in ((s.n_series, "series"), (s.n_instances, "instance(s)"))
                           if n is not None)
        out.append(" · ".join(b for b in (date, "/".join(s.modalities) or "?", counts,
                                          _ellipsis(s.study_uid, tail)) if b))
    return out


def instance_labels(records: Sequence[dict]) -> list[str]:
    """One label per instance record (``{"sop_instance_uid", "instance_number"}``): ``image N`` (its Instance
    Number, else its place in the list), with the end of its SOP Instance UID added when another instance of
    the list would read the same."""
    base = [f"image {r.get('instance_number') if r.get('instance_number') is not None else i + 1}"
            for i, r in enumerate(records)]
    counts = Counter(base)
    out = list(base)
    for label in (b for b, n in counts.items() if n > 1):
        idx = [i for i, b in enumerate(base) if b == label]
        uids = [str(records[i]["sop_instance_uid"]) for i in idx]
        for i, uid, tail in zip(idx, uids, uid_tails(uids, INSTANCE_TAIL), strict=True):
            out[i] = f"{label} ({_ellipsis(uid, tail)})"
    seen: Counter = Counter()
    for i, label in enumerate(out):  # the same instance listed twice: its whole UID did not tell them apart
        seen[label] += 1
        if seen[label] > 1:
            out[i] = f"{label} #{seen[label]}"
    return out
