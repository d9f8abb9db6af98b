"""Home: what ConceptLens is, which bundles were found, where to go next."""

import pandas as pd
import streamlit as st

from lens.bundles import ENV_VAR, KIND_VIEWS, available, bundle_roots
from lens.figures import download_table


def show_bundles() -> None:
    """The bundles found, with their details and headline metrics, or where to get some."""
    bundles = [b for kind in KIND_VIEWS for b in available(kind)]
    roots = ", ".join(f"`{r}`" for r in bundle_roots(st.session_state.get("extra_bundle_root")))
    if not bundles:
        st.warning(
            f"No bundles were found in {roots}. Train some with `conceptlens train ...`, then add their "
            f"folder in the sidebar or set `{ENV_VAR}`."
        )
    else:
        st.subheader("Bundles found")
        st.caption(f"Searched: {roots}. Pick the model each page uses in the sidebar.")
        rows = [
            {
                "kind": b.kind,
                "bundle": b.name,
                "details": b.summary,
                "headline metrics": " · ".join(f"{k} {v:.3f}" for k, v in b.metrics.items()),
            }
            for b in bundles
        ]
        table = pd.DataFrame(rows)
        # The details are long: a table cell would cut them or scroll sideways, so they are written out below.
        st.dataframe(table.drop(columns="details"), hide_index=True, width="stretch")
        with st.expander("Details of each bundle (model, backbone, data)", expanded=True):
            st.markdown("\n".join(f"- **{b.name}** ({b.kind}): {b.summary}" for b in bundles))
        download_table(table, "bundles")


def show_next_steps() -> None:
    """A link to every page, with what it shows."""
    st.subheader("Where to go next")
    st.page_link(
        "views/hash_codes.py",
        label="Hash codes, bit by bit — which images turn a bit on",
        icon=":material/grid_on:",
    )
    st.page_link(
        "views/concept_attention.py",
        label="Concept attention — where each concept looks",
        icon=":material/center_focus_strong:",
    )
    st.page_link(
        "views/retrieval.py", label="Retrieval — a model with vs without L_csd", icon=":material/compare:"
    )
    st.page_link(
        "views/ceir_concepts.py",
        label="CEIR — concept vectors, clusters, interventions",
        icon=":material/hub:",
    )
    st.page_link(
        "views/open_world.py",
        label="Open-world labels — concepts for your own images",
        icon=":material/label:",
    )


def main() -> None:
    st.title("ConceptLens")
    st.markdown(
        "ConceptLens looks inside two interpretable image models. **ConceptHash** builds each group of "
        "hash bits from one learned concept token of a vision transformer, so bits stand for parts and "
        "their attention maps show where they look. **CEIR** turns an image into a vector of "
        "human-readable concepts, learns a latent space from it, and explains clusters and labels by "
        "those concepts."
    )
    show_bundles()
    show_next_steps()


main()
