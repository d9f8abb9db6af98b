"""Placeholder: this view is being built."""

import streamlit as st

st.title("retrieval")
st.info("This view is being built.")
