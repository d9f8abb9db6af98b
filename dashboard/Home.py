"""ConceptLens dashboard: ``streamlit run dashboard/Home.py``.

The entry point draws the shared sidebar (bundle folder and model pickers) and the navigation;
each page lives in ``pages/`` and only calls ``core``'s public functions.
"""

import streamlit as st

from lens.bundles import render_sidebar

st.set_page_config(page_title="ConceptLens", page_icon=":material/center_focus_strong:", layout="wide")

PAGES = {
    "": [st.Page("pages/home.py", title="Home", icon=":material/home:", default=True)],
    "Hashing": [
        st.Page("pages/hash_codes.py", title="Hash codes, bit by bit", icon=":material/grid_on:"),
        st.Page(
            "pages/concept_attention.py", title="Concept attention", icon=":material/center_focus_strong:"
        ),
        st.Page("pages/retrieval.py", title="Retrieval: with vs without L_csd", icon=":material/compare:"),
    ],
    "Concepts": [
        st.Page("pages/ceir_concepts.py", title="CEIR concepts and clusters", icon=":material/hub:"),
        st.Page("pages/open_world.py", title="Open-world concept labels", icon=":material/label:"),
    ],
}

navigation = st.navigation(PAGES)
render_sidebar()
navigation.run()
