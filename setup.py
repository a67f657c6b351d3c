"""Package layout: hand-written code in services/, code generated from proto/ in gen/."""

from setuptools import find_packages, setup

generated = find_packages(where="gen")
setup(
    packages=find_packages(include=["services", "services.*"]) + generated,
    package_dir={name: "gen/" + name.replace(".", "/") for name in generated},
)
