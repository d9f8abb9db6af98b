"""ConceptLens dashboard: ``streamlit run dashboard/Home.py``.

The entry point draws the shared sidebar (bundle folder and model pickers) and the navigation;
each page lives in ``views/`` and only calls ``core``'s public functions. (Not ``pages/``: Streamlit
treats a folder of that name as legacy auto-discovered pages, and a direct URL would skip Home.py.)
"""

from pathlib import Path

import streamlit as st

from lens.bundles import render_sidebar
from lens.startup import start_imports, wait_for_imports

HOME = st.Page("views/home.py", title="Home", icon=":material/home:", default=True)
PAGES = {
    "": [HOME],
    "Hashing": [
        st.Page("views/hash_codes.py", title="Hash codes, bit by bit", icon=":material/grid_on:"),
        st.Page(
            "views/concept_attention.py", title="Concept attention", icon=":material/center_focus_strong:"
        ),
        st.Page("views/retrieval.py", title="Retrieval: with vs without L_csd", icon=":material/compare:"),
    ],
    "Concepts": [
        st.Page("views/ceir_concepts.py", title="CEIR concepts and clusters", icon=":material/hub:"),
        st.Page("views/open_world.py", title="Open-world concept labels", icon=":material/label:"),
    ],
}


def main() -> None:
    # An emoji icon becomes an inline data: URL; a ":material/...:" page icon would make every page load fetch
    # the favicon from fonts.gstatic.com, which fails (and leaks a request) with no network.
    st.set_page_config(page_title="ConceptLens", page_icon="🔎", layout="wide")
    navigation = st.navigation(PAGES)
    render_sidebar()
    # No page needs PyTorch to draw (each draws from its bundle's stored arrays); a page's own light modules
    # are imported first, behind a progress bar. After Home is drawn, the models' code (seconds to import
    # after a restart) is imported in the background for the first action that runs a model.
    if navigation.url_path != HOME.url_path:
        wait_for_imports(Path(__file__).parent / "views" / f"{navigation.url_path}.py")
    navigation.run()
    if navigation.url_path == HOME.url_path:
        start_imports()


main()
