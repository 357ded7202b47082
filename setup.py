"""Packages: pointsmart, plus the top-level migrations/ shipped as pointsmart.migrations.

pyproject.toml's packages.find cannot pick up a package mapped from another directory, and
without it `pip install .` gives a `pointsmart demo` that cannot create its database.
"""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["pointsmart", "pointsmart.*"]), "pointsmart.migrations"])
