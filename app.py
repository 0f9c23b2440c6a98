"""medclf: the clinician app's server. Run with `streamlit run app.py` (or scripts/app.sh), from any folder.

`streamlit run` finds ``app`` below (an ``st.App``) and serves streamlit_app.py, the script each browser
session runs (navigation, model picker, notice, pages). As the server starts, before any browser connects,
it loads and warms the default model in a background thread (``app_ui.start_warming_default_model``), into
the same cache the pages read: the first upload finds the model ready instead of waiting for it.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The app's own checkout holds the bundled models and samples: served from any working directory, unless the
# environment names other folders (medclf_core's own default is ./models and ./samples in the working directory).
_CHECKOUT = os.path.dirname(os.path.abspath(__file__))
os.environ.setdefault("MEDCLF_MODELS_DIR", os.path.join(_CHECKOUT, "models"))
os.environ.setdefault("MEDCLF_SAMPLES_DIR", os.path.join(_CHECKOUT, "samples"))

from contextlib import asynccontextmanager  # noqa: E402
from pathlib import Path  # noqa: E402

import streamlit as st  # noqa: E402

import app_ui  # noqa: E402
from medclf_core.server import streamlit_compat  # noqa: E402

SCRIPT = Path(_CHECKOUT) / "streamlit_app.py"


@asynccontextmanager
async def warm_default_model_at_start(_app):
    """The server's lifespan: start warming the default model, serve, and nothing to undo at shutdown."""
    app_ui.start_warming_default_model()
    yield


# streamlit_app.py's st.navigation is the app's navigation from the first visit on, a bookmarked page included
# (not Streamlit's pages/-folder mode, which would run that page alone, without the picker).
streamlit_compat.navigation_from_the_first_visit()
app = st.App(SCRIPT, lifespan=warm_default_model_at_start)
