"""Three "not this kind of image" checks beside the feature gate: the patient's age, the modality router and
its body-part probe.

- :func:`~medclf_core.io.dicom_header.parse_patient_age` reads a DICOM ``PatientAge`` (``nnnD``, ``nnnW``,
  ``nnnM`` or ``nnnY``) in years (a header without one has it computed from the birth date and study date,
  :func:`~medclf_core.io.dicom_header.header_patient_age`, and the reason says so); :func:`age_reason` refuses an age outside the card's
  ``intended_use.age_years`` (``[min, max]``, in years) with a plain sentence ("adult patient (45 years), but this model was trained on children aged 1-5").
- :func:`body_part_reason`: the router's body-part probe (:mod:`medclf_core.trust.body_part`) refuses an image
  it gives P(head) < 0.1, for a model whose card declares head body parts only.
- :func:`router_reason`: the bundled imaging-modality model (CT / MRI / XRAY) as a router. A model whose
  card declares its modalities refuses an image that the router calls another modality with probability
  at least :data:`ROUTER_MIN_CONFIDENCE` (0.9); below that, or when the card declares nothing, the router
  says nothing. The rule takes the router's probabilities, so it is tested without a model.

Example::

    >>> parse_patient_age("045Y"), parse_patient_age("018M"), parse_patient_age("")
    (45.0, 1.5, None)
    >>> age_reason({"age_years": [1, 5]}, {"PatientAge": "045Y"})
    'adult patient (45 years), but this model was trained on children aged 1-5'
    >>> router_reason({"modalities": ["MR"]}, {"CT": 0.95, "MRI": 0.04, "XRAY": 0.01})
    'the imaging-modality model calls it CT (P(CT) = 95.0%); this model is for MR'
    >>> router_reason({"modalities": ["MR"]}, {"CT": 0.6, "MRI": 0.4, "XRAY": 0.0}) is None
    True
    >>> body_part_reason({"body_parts": ["HEAD", "BRAIN"]}, {"MRI": 0.99, "HEAD": 0.03})
    'the body-part check calls it another body part than the head (P(head) = 3.0%); this model is for BRAIN or HEAD'
"""

from __future__ import annotations

from collections.abc import Mapping

from medclf_core.formatting import probability_of
from medclf_core.io.dicom_header import AGE_COMPUTED_FROM, parse_patient_age
from medclf_core.trust.body_part import HEAD, MAX_P_HEAD

ROUTER_MIN_CONFIDENCE = 0.9
ROUTER_RULE = (f"refused when the bundled imaging-modality model gives another modality than the card's a "
               f"probability >= {ROUTER_MIN_CONFIDENCE:g}")
#: The router's classes and the DICOM Modality codes (or card words) each one covers.
ROUTER_CLASSES = {"CT": {"CT"}, "MRI": {"MR", "MRI"}, "XRAY": {"CR", "DX", "DR", "RG", "XRAY", "X-RAY", "RADIOGRAPH"}}
ADULT_YEARS = 18.0
#: Card body parts that the body-part probe's "head" covers.
HEAD_PARTS = {"HEAD", "BRAIN", "SKULL"}


def age_range(intended_use: Mapping | None) -> tuple[float, float] | None:
    """The card's ``intended_use.age_years`` as ``(min, max)`` years, or None when not declared or malformed."""
    rng = (intended_use or {}).get("age_years")
    try:
        lo, hi = (float(v) for v in rng)
    except (TypeError, ValueError):
        return None
    return (lo, hi) if 0 <= lo <= hi else None


def _years(x: float) -> str:
    return f"{x:g}" if x >= 1 or x == 0 else f"{x * 12:.0f} months"


def age_reason(intended_use: Mapping | None, dicom: Mapping | None) -> str | None:
    """A plain refuse reason when the header's ``PatientAge`` is outside the card's age range, else None.

    An age the header facts say was computed (``AGE_COMPUTED_FROM``: no ``PatientAge``, so from the birth date and
    study date, :func:`~medclf_core.io.dicom_header.header_patient_age`) says so in the reason."""
    rng = age_range(intended_use)
    age = parse_patient_age((dicom or {}).get("PatientAge"))
    if rng is None or age is None or rng[0] <= age <= rng[1]:
        return None
    lo, hi = rng
    shown = f"{age:g} years" if age >= 1 else f"{_years(age)}"
    computed_from = (dicom or {}).get(AGE_COMPUTED_FROM)
    if computed_from:
        shown += f", computed from the {computed_from}"
    if hi < ADULT_YEARS <= age:
        return f"adult patient ({shown}), but this model was trained on children aged {_years(lo)}-{_years(hi)}"
    if age < ADULT_YEARS <= lo:
        return f"child ({shown}), but this model was trained on adults aged {_years(lo)}-{_years(hi)}"
    return f"patient aged {shown}, but this model was trained on patients aged {_years(lo)}-{_years(hi)} years"


def router_classes(intended_use: Mapping | None) -> set[str]:
    """The router's classes the card's ``modalities`` cover (empty when it declares none the router knows)."""
    declared = {str(m).strip().upper() for m in (intended_use or {}).get("modalities") or []}
    return {cls for cls, codes in ROUTER_CLASSES.items() if codes & declared}


def router_reason(intended_use: Mapping | None, probabilities: Mapping[str, float] | None,
                  min_confidence: float = ROUTER_MIN_CONFIDENCE) -> str | None:
    """A plain refuse reason when the router calls the image another modality than the card's with
    probability >= ``min_confidence``; None otherwise (no router output, no declared modality, or unsure)."""
    wanted = router_classes(intended_use)
    if not wanted or not probabilities:
        return None
    modalities = [k for k in probabilities if k in ROUTER_CLASSES]  # not the body-part probe's HEAD
    if not modalities:
        return None
    top = max(modalities, key=lambda k: probabilities[k])
    p = float(probabilities[top])
    if top in wanted or p < min_confidence:
        return None
    declared = " or ".join(str(m) for m in (intended_use or {}).get("modalities") or [])
    return f"the imaging-modality model calls it {top} ({probability_of(top, p)}); this model is for {declared}"


def body_part_reason(intended_use: Mapping | None, probabilities: Mapping[str, float] | None,
                     max_p_head: float = MAX_P_HEAD) -> str | None:
    """A plain refuse reason when the card declares head body parts only and the router's body-part probe gives
    the image ``P(head) < max_p_head``; None otherwise (no probe output, another body part declared, or a head)."""
    parts = {str(b).strip().upper() for b in (intended_use or {}).get("body_parts") or []}
    p_head = (probabilities or {}).get(HEAD)
    if not parts or not parts <= HEAD_PARTS or p_head is None or p_head >= max_p_head:
        return None
    return (f"the body-part check calls it another body part than the head ({probability_of('head', p_head)}); "
            f"this model is for {' or '.join(sorted(parts))}")
