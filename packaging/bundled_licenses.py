"""Print the distributions of the running environment with the license each declares.

Run by build-deb.sh with the package's venv, for /usr/share/doc/consolegw/copyright."""

import importlib.metadata as md


def declared_license(meta: md.PackageMetadata) -> str:
    expression = meta.get("License-Expression")
    if expression:
        return expression
    text = (meta.get("License") or "").strip()
    if text and "\n" not in text and len(text) <= 60:  # a name, not a license's full text
        return text
    classifiers = [
        c.split(" :: ")[-1] for c in meta.get_all("Classifier") or [] if c.startswith("License ::")
    ]
    return ", ".join(classifiers) or "see its dist-info directory"


for dist in sorted(md.distributions(), key=lambda d: d.metadata["Name"].lower()):
    print(f" {dist.metadata['Name']} {dist.version}: {declared_license(dist.metadata)}")
