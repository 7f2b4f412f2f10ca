"""What pyproject.toml cannot say: the page lives in ``static/`` at the top of the
repository (where the brief and the README put it) and ships inside the wheel as the
package data ``mrqart/static/`` (every file, sub-directories included), so that an
installed mrqart (``pip install .``, no checkout) serves it. mrqart.config finds it."""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["mrqart", "mrqart.*"]), "mrqart.static"],
    package_dir={"mrqart.static": "static"},
    package_data={"mrqart.static": ["**/*"]},
)
