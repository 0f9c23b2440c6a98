"""What a shared Streamlit server needs beyond the pages: data roots and the password
(access), memory returned to the system, and the compatibility patches over private Streamlit APIs,
each named and tested against the real Streamlit.

May import: :mod:`medclf_core.reports` and the layers below it; only this layer and the pages import Streamlit.
"""
