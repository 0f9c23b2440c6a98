"""medclf: the script each browser session runs. Start the app with `streamlit run app.py` (or scripts/app.sh):
app.py is the server, which warms the default model as it starts and then serves this script.

Pages live in pages/; this file sets the page config, the navigation, the shared
model picker, and the research-use notice.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import streamlit as st  # noqa: E402

import app_ui  # noqa: E402

# The tab icon is an emoji, drawn by the browser itself (Streamlit makes it an inline data: SVG): a ":material/...:"
# page icon makes every page load fetch an SVG from fonts.gstatic.com (issue 26). The st.Page icons below are
# drawn with the Material Symbols font that Streamlit serves itself. tests/e2e/test_no_outside_requests.py checks.
st.set_page_config(page_title="medclf: medical image classification", page_icon="🩺",
                   layout="wide", menu_items={"About": "medclf research demo. " + app_ui.NOTICE})

# Predict is served at "/"; its own name is taken by a hidden page that sends an old bookmark of /predict
# there (the default page's url_path is never served, so /predict would say "Page not found").
predict = st.Page("pages/predict.py", title="Predict", icon=":material/image_search:", default=True, url_path="home")
pages = [
    predict,
    st.Page("pages/train.py", title="Train", icon=":material/model_training:"),
    st.Page("pages/evaluate.py", title="Evaluate", icon=":material/analytics:"),
    st.Page("pages/models.py", title="Models", icon=":material/inventory_2:"),
    st.Page(lambda: st.switch_page(predict, query_params=st.query_params.to_dict()), title="Predict",
            url_path="predict", visibility="hidden"),
]
page = st.navigation(pages)
app_ui.start_page()  # after st.navigation (which ends Streamlit's pages/-folder mode), before anything else
app_ui.sidebar_model_picker()
app_ui.research_notice()
page.run()
