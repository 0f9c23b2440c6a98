"""A DICOMweb connection to a PACS: search studies, list series and instances, fetch and store instances.

The HTTP is ``dicomweb-client``'s (QIDO-RS, WADO-RS, STOW-RS): a well-kept library, so nothing here
builds a request by hand except the one Orthanc fallback for deleting a stored instance (DICOMweb has no
deletion that Orthanc implements; :meth:`PacsConnection.delete_instance`).

- Credentials come from the caller or from ``MEDCLF_PACS_USER`` / ``MEDCLF_PACS_PASSWORD``
  (:meth:`PacsConnection.from_env`), never from a command line; they are never logged or shown.
- Every fault is a :class:`PacsError` with a plain sentence: the PACS cannot be reached, the user name
  or password is refused, it did not answer in time, it answered with something unreadable. No
  message carries a UID, a patient ID or the library's own text (which quotes URLs with UIDs in them).

Example (against a running PACS; ``scripts/pacs.sh start`` gives one)::

    >>> conn = PacsConnection.from_env("http://127.0.0.1:8042/dicom-web")       # doctest: +SKIP
    >>> study = conn.search_studies(modality="CR")[0]                           # doctest: +SKIP
    >>> series = conn.list_series(study.study_uid)[0]                           # doctest: +SKIP
    >>> sop = conn.list_instances(study.study_uid, series.series_uid)[0]        # doctest: +SKIP
    >>> load_image(conn.fetch_instance(study.study_uid, series.series_uid, sop))  # doctest: +SKIP
"""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from medclf_core.errors import MedclfError

USER_ENV, PASSWORD_ENV = "MEDCLF_PACS_USER", "MEDCLF_PACS_PASSWORD"
DEFAULT_TIMEOUT_S = 20.0
DEFAULT_SEARCH_LIMIT = 50
#: Modalities whose series hold no images to classify (reports, documents, key objects, presentation states, ...).
NON_IMAGE_MODALITIES = frozenset({"SR", "DOC", "KO", "PR", "REG", "RWV", "FID", "PLAN", "RTPLAN", "RTRECORD",
                                  "RTSTRUCT", "AU", "ECG", "HD"})
#: SOP classes without pixels: SR documents (1.2.840.10008.5.1.4.1.1.88.*), Encapsulated PDF/CDA/STL (...104.*),
#: key object selection, presentation states (...11.*).
NON_IMAGE_SOP_PREFIXES = ("1.2.840.10008.5.1.4.1.1.88.", "1.2.840.10008.5.1.4.1.1.104.",
                          "1.2.840.10008.5.1.4.1.1.11.")
#: What a call that writes to the PACS says it is doing: after a fault there, something may have changed.
WRITES = frozenset({"storing results", "removing a stored result"})
_ALL_SYNTAXES = (("application/dicom", "*"),)  # the stored transfer syntax: no transcoding asked of the PACS


class PacsError(MedclfError):
    """A PACS could not be used: a plain sentence, no identifier and no server internals."""


@dataclass(frozen=True)
class StudySummary:
    """One study found by :meth:`PacsConnection.search_studies` (no patient name or ID: they stay off the page)."""
    study_uid: str
    study_date: str | None
    modalities: tuple[str, ...]
    n_series: int | None
    n_instances: int | None


@dataclass(frozen=True)
class SeriesSummary:
    """One series of a study; ``is_image`` is False for reports, documents and other series without pixels."""
    series_uid: str
    modality: str | None
    body_part: str | None
    description: str | None
    series_number: int | None
    n_instances: int | None
    is_image: bool


def is_image_sop_class(sop_class_uid: str | None) -> bool:
    """False for the SOP classes that never hold pixels (SR, Encapsulated documents, presentation states)."""
    return not (sop_class_uid and str(sop_class_uid).startswith(NON_IMAGE_SOP_PREFIXES))


def _value(item: dict, tag: str, default=None):
    """The first value of ``tag`` in one DICOM JSON object, else ``default``."""
    values = (item.get(tag) or {}).get("Value") or []
    return values[0] if values else default


def _values(item: dict, tag: str) -> list:
    return list((item.get(tag) or {}).get("Value") or [])


def _int_or_none(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class PacsConnection:
    """A DICOMweb service (``url``: its root, e.g. ``http://127.0.0.1:8042/dicom-web``) with a user and password.
    ``typed``: the user name or password was typed in a form (a refusal then says to check them), not taken
    from ``MEDCLF_PACS_USER`` / ``MEDCLF_PACS_PASSWORD`` (a refusal then says to set those)."""

    def __init__(self, url: str, user: str | None = None, password: str | None = None, *,
                 timeout: float = DEFAULT_TIMEOUT_S, typed: bool = False):
        parts = urlsplit(str(url or "").strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PacsError("The PACS address must be a DICOMweb root URL such as http://127.0.0.1:8042/dicom-web.")
        self.url = str(url).strip().rstrip("/")
        self.where = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
        self.timeout = float(timeout)
        self._auth = (user, password or "") if user else None
        self.typed = bool(typed)
        self._client = None

    @classmethod
    def from_env(cls, url: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> PacsConnection:
        """A connection whose user and password come from ``MEDCLF_PACS_USER`` / ``MEDCLF_PACS_PASSWORD``."""
        return cls(url, os.environ.get(USER_ENV) or None, os.environ.get(PASSWORD_ENV) or None, timeout=timeout)

    def __repr__(self) -> str:  # never the password
        return f"PacsConnection({self.url!r}, user={'set' if self._auth else 'none'})"

    @property
    def client(self):
        """The ``dicomweb_client.DICOMwebClient`` (made on first use; few retries, short waits, quiet logs)."""
        if self._client is None:
            import requests
            from dicomweb_client import DICOMwebClient

            logging.getLogger("dicomweb_client").setLevel(logging.WARNING)  # its debug/info lines quote UIDs
            session = requests.Session()
            session.auth = self._auth
            self._client = DICOMwebClient(self.url, session=session, timeout=self.timeout)
            self._client.set_http_retry_params(retry=True, max_attempts=2, wait_exponential_multiplier=200)
        return self._client

    def call(self, what: str, fn: Callable, *args, **kwargs):
        """``fn(*args, **kwargs)`` with every fault turned into a :class:`PacsError` about ``what``."""
        try:
            return fn(*args, **kwargs)
        except PacsError:
            raise
        except Exception as exc:  # noqa: BLE001 - each kind of fault gets its own plain sentence below
            raise PacsError(self.explain(exc, what)) from None

    def explain(self, exc: BaseException, what: str) -> str:
        """The plain sentence for a fault while doing ``what`` (no URL, UID or library text in it)."""
        import requests

        if isinstance(exc, requests.exceptions.Timeout):
            return f"The PACS at {self.where} did not answer within {self.timeout:g} s ({what}). Try again later."
        if isinstance(exc, requests.exceptions.ConnectionError):
            return (f"The PACS at {self.where} could not be reached ({what}): is it running, and is the address "
                    "right?" + ("" if what in WRITES else " Nothing was changed."))
        if isinstance(exc, requests.exceptions.HTTPError):
            status = getattr(exc.response, "status_code", None)
            if status in (401, 403):
                advice = ("Check the user name and password typed." if self.typed else
                          f"Set {USER_ENV} and {PASSWORD_ENV}.")
                return f"The PACS at {self.where} refused the user name or password ({what}). {advice}"
            if status == 404:
                return f"The PACS at {self.where} does not have what was asked for ({what}); it may have been removed."
            return f"The PACS at {self.where} answered with an error (HTTP {status}) ({what})."
        if isinstance(exc, requests.exceptions.RequestException) and not isinstance(exc, ValueError):
            return f"The connection to the PACS at {self.where} failed ({what}): {type(exc).__name__}."
        return f"The PACS at {self.where} sent an answer that could not be read ({what}): {type(exc).__name__}."

    def _json_list(self, what: str, key: str, fn: Callable, *args, **kwargs) -> list[dict]:
        """The DICOM JSON objects of a QIDO answer, each with its UID ``key``, else a :class:`PacsError`."""
        found = self.call(what, fn, *args, **kwargs)
        if not isinstance(found, list) or not all(isinstance(x, dict) and _value(x, key) for x in found):
            raise PacsError(f"The PACS at {self.where} sent an answer that could not be read ({what}).")
        return found

    def search_studies(self, patient_id: str | None = None, study_date: str | None = None,
                       modality: str | None = None, limit: int = DEFAULT_SEARCH_LIMIT) -> list[StudySummary]:
        """Studies matching all the filters given (``study_date``: ``YYYYMMDD`` or a range ``YYYYMMDD-YYYYMMDD``;
        ``modality``: e.g. ``CR``), at most ``limit``."""
        filters = {k: v for k, v in (("PatientID", patient_id), ("StudyDate", _dicom_date(study_date)),
                                     ("ModalitiesInStudy", (modality or "").strip().upper() or None)) if v}
        found = self._json_list("searching studies", "0020000D", self.client.search_for_studies,
                                search_filters=filters, limit=max(1, int(limit)),
                                fields=["ModalitiesInStudy", "NumberOfStudyRelatedSeries",
                                        "NumberOfStudyRelatedInstances", "StudyDate"])
        out = []
        for item in found:
            uid = _value(item, "0020000D")
            if uid:
                out.append(StudySummary(str(uid), _value(item, "00080020"),
                                        tuple(map(str, _values(item, "00080061"))),
                                        _int_or_none(_value(item, "00201206")), _int_or_none(_value(item, "00201208"))))
        return out

    def list_series(self, study_uid: str) -> list[SeriesSummary]:
        """The series of one study, in series-number order."""
        found = self._json_list("listing the study's series", "0020000E", self.client.search_for_series,
                                study_uid,
                                fields=["BodyPartExamined", "SeriesDescription", "NumberOfSeriesRelatedInstances"])
        out = []
        for item in found:
            uid = _value(item, "0020000E")
            if not uid:
                continue
            modality = _value(item, "00080060")
            out.append(SeriesSummary(str(uid), modality, _value(item, "00180015"), _value(item, "0008103E"),
                                     _int_or_none(_value(item, "00200011")), _int_or_none(_value(item, "00201209")),
                                     is_image=str(modality or "").upper() not in NON_IMAGE_MODALITIES))
        return sorted(out, key=lambda s: (s.series_number is None, s.series_number or 0))

    def instances(self, study_uid: str, series_uid: str) -> list[dict]:
        """``[{"sop_instance_uid", "sop_class_uid", "instance_number", "is_image"}]`` of one series, in instance
        order."""
        found = self._json_list("listing the series' instances", "00080018", self.client.search_for_instances,
                                study_uid, series_uid, fields=["InstanceNumber", "SOPClassUID"])
        out = [{"sop_instance_uid": str(_value(i, "00080018")), "sop_class_uid": _value(i, "00080016"),
                "instance_number": _int_or_none(_value(i, "00200013")),
                "is_image": is_image_sop_class(_value(i, "00080016"))} for i in found if _value(i, "00080018")]
        return sorted(out, key=lambda r: (r["instance_number"] is None, r["instance_number"] or 0))

    def list_instances(self, study_uid: str, series_uid: str) -> list[str]:
        """The SOP Instance UIDs of one series, in instance-number order."""
        return [r["sop_instance_uid"] for r in self.instances(study_uid, series_uid)]

    def fetch_instance(self, study_uid: str, series_uid: str, sop_uid: str) -> bytes:
        """One instance as DICOM Part 10 bytes, in its stored transfer syntax (what ``load_image`` reads)."""
        ds = self.call("fetching an instance", self.client.retrieve_instance, study_uid, series_uid, sop_uid,
                       media_types=_ALL_SYNTAXES)
        try:
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            return buffer.getvalue()
        except Exception as exc:  # noqa: BLE001 - a damaged answer: one plain sentence
            raise PacsError(f"The PACS at {self.where} sent an instance that could not be read "
                            f"({type(exc).__name__}).") from None

    def fetch_header(self, study_uid: str, series_uid: str, sop_uid: str):
        """One instance's header as a pydicom Dataset (the source a write-back refers to)."""
        from medclf_core.io.dicom_header import read_dataset

        return read_dataset(self.fetch_instance(study_uid, series_uid, sop_uid), stop_before_pixels=True)

    def store(self, datasets: Sequence, study_uid: str | None = None) -> list[str]:
        """STOW-RS ``datasets``; the SOP Instance UIDs the PACS reports as failed (empty: all stored)."""
        answer = self.call("storing results", self.client.store_instances, list(datasets), study_uid)
        failed = getattr(answer, "FailedSOPSequence", None) or []
        return [str(getattr(item, "ReferencedSOPInstanceUID", "")) for item in failed]

    def delete_instance(self, study_uid: str, series_uid: str, sop_uid: str) -> None:
        """Remove one instance: DICOMweb DELETE, or, where the server has none (HTTP 405, as Orthanc),
        Orthanc's own REST API beside the DICOMweb root (``/tools/lookup``, ``DELETE /instances/{id}``)."""
        import requests

        try:
            self.client.delete_instance(study_uid, series_uid, sop_uid)
            return
        except requests.exceptions.HTTPError as exc:
            if getattr(exc.response, "status_code", None) not in (400, 404, 405, 501):
                raise PacsError(self.explain(exc, "removing a stored result")) from None
        except Exception as exc:  # noqa: BLE001
            raise PacsError(self.explain(exc, "removing a stored result")) from None
        self.call("removing a stored result", self._orthanc_delete, sop_uid)

    def _orthanc_delete(self, sop_uid: str) -> None:
        root = self.url.rsplit("/", 1)[0] if self.url.rstrip("/").endswith("dicom-web") else self.url
        session = self.client._session  # the authenticated session dicomweb-client uses
        found = session.post(f"{root}/tools/lookup", data=sop_uid, timeout=self.timeout)
        found.raise_for_status()
        for item in found.json():
            if item.get("Type") == "Instance":
                session.delete(f"{root}/instances/{item['ID']}", timeout=self.timeout).raise_for_status()


def _dicom_date(value) -> str | None:
    """``YYYYMMDD`` or a range ``YYYYMMDD-YYYYMMDD`` from a date, a ``(start, end)`` pair of dates, ``YYYY-MM-DD``
    or ``YYYYMMDD`` text; None for nothing."""
    if value is None or value == "" or value == ():
        return None
    if isinstance(value, tuple | list) and len(value) == 2:
        return f"{_dicom_date(value[0]) or ''}-{_dicom_date(value[1]) or ''}"
    if hasattr(value, "strftime"):
        return value.strftime("%Y%m%d")
    text = str(value).strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        text = text.replace("-", "")
    if not re.fullmatch(r"\d{8}(-\d{8})?", text):
        raise PacsError("A study date must look like 2024-01-31 (or 20240131, or a range 20240101-20240131).")
    return text
