"""Serving evidence photos to the people of their village only."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("media", __name__, url_prefix="/photos")
