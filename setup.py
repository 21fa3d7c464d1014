"""Maps the design card's top-level folders into the `rayborg` namespace (see design.md)."""
from setuptools import find_packages, setup

TOP_LEVEL = ("api", "store", "drivers", "actors")

packages = ["rayborg"] + [f"rayborg.{p}" for p in find_packages("rayborg")]
package_dir = {"rayborg": "rayborg"}
for top in TOP_LEVEL:
    packages += [f"rayborg.{top}"] + [f"rayborg.{top}.{p}" for p in find_packages(top)]
    package_dir[f"rayborg.{top}"] = top

setup(
    packages=packages,
    package_dir=package_dir,
    package_data={"rayborg.store": ["migrations/*.ini", "migrations/*.mako"]},
    include_package_data=True,
)
