"""The page layout of the PDF report (:mod:`medclf_core.reports.pdf`): an A4 document whose every page carries
the research-use notice in its header and footer, and the three kinds of text written on it (lines, headings,
key/value rows) that fill a page before starting the next one.

    >>> page = Page()
    >>> page.heading("Model card")
    >>> page.rows([("Name", "chest-demo"), ("Task", "Chest X-ray: pneumonia vs normal")])
    >>> page.pdf.page, latin1("P \u2265 0.5, \u80ba")
    (1, 'P >= 0.5, ?')
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

NOTICE = "Research demo, not for clinical use."
NOTICE_DETAIL = ("The models are not medical devices. This report shows what a model computed; it is not a "
                 "diagnosis and must not be used to make clinical decisions.")


@functools.cache
def _report_document_class():
    """An A4 ``FPDF`` whose every page carries the research-use notice in its header and footer
    (fpdf2 is imported here, when a report is made: it takes half a second)."""
    from fpdf import FPDF
    from fpdf.enums import XPos, YPos

    class ReportDocument(FPDF):
        def header(self):
            self.set_font("Helvetica", "B", 9)
            self.set_text_color(160, 0, 0)
            self.cell(0, 5, latin1(f"{NOTICE} Not a diagnosis."), align="C", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            self.set_text_color(0, 0, 0)
            self.ln(1)

        def footer(self):
            self.set_y(-12)
            self.set_font("Helvetica", "", 7)
            self.set_text_color(90, 90, 90)
            self.cell(0, 4, latin1(f"medclf report, page {self.page_no()}. {NOTICE}"), align="C")

    return ReportDocument


class Page:
    """The report being written, with its three kinds of text: lines, headings and key/value rows."""

    def __init__(self):
        pdf = _report_document_class()(format="A4", unit="mm")
        pdf.set_auto_page_break(True, margin=15)
        pdf.set_title("medclf prediction report")
        pdf.set_creator("medclf")
        pdf.set_author("")
        pdf.set_image_filter("DCTDecode")  # pictures as JPEG: a printable report, not an archive of the image
        pdf.add_page()
        self.pdf = pdf
        self.width = pdf.w - pdf.l_margin - pdf.r_margin

    def line(self, text: str, size: float = 9, style: str = "", h: float = 4.6, wrap_chars: bool = False) -> None:
        """A paragraph across the page (wrapped at words, or anywhere with ``wrap_chars``)."""
        from fpdf.enums import WrapMode, XPos, YPos

        self.pdf.set_font("Helvetica", style, size)
        self.pdf.multi_cell(self.width, h, latin1(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT,
                            wrapmode=WrapMode.CHAR if wrap_chars else WrapMode.WORD, align="L")

    def heading(self, text: str) -> None:
        """A section title, moved to the next page with its section when not even one row fits under it."""
        self.room(2 + 6 + 9)
        self.pdf.ln(2)
        self.line(text, 11, "B", 6)

    def room(self, height: float) -> None:
        """Start a new page unless ``height`` mm still fit above this page's bottom margin."""
        if self.pdf.will_page_break(height):
            self.pdf.add_page()

    def rows(self, pairs: Sequence[tuple[str, str]], key_w: float = 48, h: float = 4.4) -> None:
        """A two-column table: the key in bold, its value wrapped beside it. Rows follow one another on a
        page; a row that does not fit in what is left of it starts the next page (never split in two)."""
        from fpdf.enums import XPos, YPos

        pdf = self.pdf
        for key, value in pairs:
            cells = ((key_w, "B", key, XPos.RIGHT, YPos.TOP),
                     (self.width - key_w, "", value, XPos.LMARGIN, YPos.NEXT))
            height = max(self._height(w, h, style, text) for w, style, text, _, _ in cells)
            self.room(height)
            y, page = pdf.get_y(), pdf.page
            for w, style, text, new_x, new_y in cells:
                pdf.set_font("Helvetica", style, 8.5)
                pdf.multi_cell(w, h, latin1(text), new_x=new_x, new_y=new_y, align="L")
            if pdf.page == page:  # a row taller than a whole page has flowed on: its y is where the value ended
                pdf.set_y(y + height)

    def _height(self, w: float, h: float, style: str, text: str, size: float = 8.5) -> float:
        """The height in mm of ``text`` wrapped into a ``w`` mm wide cell of ``h`` mm lines (nothing drawn)."""
        from fpdf.enums import MethodReturnValue

        self.pdf.set_font("Helvetica", style, size)
        lines = self.pdf.multi_cell(w, h, latin1(text), dry_run=True, output=MethodReturnValue.LINES, align="L")
        return h * len(lines)


def latin1(text) -> str:
    """Text the PDF's built-in Latin-1 font can write (other characters as '?')."""
    s = str(text).translate({0x2013: "-", 0x2014: "-", 0x2019: "'", 0x2264: "<=", 0x2265: ">="})
    return s.encode("latin-1", "replace").decode("latin-1")
