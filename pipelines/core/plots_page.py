"""An offline page template for ``dvc plots show``: Vega, Vega-Lite and Vega-Embed inlined.

DVC's default page loads these three libraries from a CDN, so the plots page is blank without internet. The
template inlines the same versions (fetched once, at setup, from the npm registry with ``npm pack``, which
checks each tarball's integrity), and ``.dvc/config`` points ``plots.html_template`` at it. Without npm the
template keeps DVC's own ``{scripts}`` placeholder: the page then works only online, as before.
"""

from __future__ import annotations

import subprocess
import tarfile
import tempfile
from pathlib import Path

__all__ = ["LIBRARIES", "fetch_libraries", "offline_template"]

# The versions dvc-render's page loads (dvc_render/vega.py), and where each package keeps its browser build.
LIBRARIES = (
    ("vega", "5.20.2", "package/build/vega.min.js"),
    ("vega-lite", "5.2.0", "package/build/vega-lite.min.js"),
    ("vega-embed", "6.18.2", "package/build/vega-embed.min.js"),
)

PAGE = """<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>DVC Plot</title>
{scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def offline_template(libraries: list[str] | None) -> str:
    """The page with each library's code inlined (no network at view time); ``None``: DVC's CDN scripts."""
    if libraries is None:
        return PAGE.format(scripts="    {scripts}")
    for code in libraries:
        if "</script" in code or "{plot_divs}" in code:
            raise ValueError("a library's code would end the script tag or hold a template placeholder")
    return PAGE.format(scripts="\n".join(f"    <script>{code}</script>" for code in libraries))


def fetch_libraries(npm: str = "npm") -> list[str]:
    """The libraries' minified code, from ``npm pack`` tarballs (raises when npm or the registry fails)."""
    with tempfile.TemporaryDirectory(prefix="loopline-vega-") as tmp:
        specs = [f"{name}@{version}" for name, version, _ in LIBRARIES]
        subprocess.run(
            [npm, "pack", "--silent", *specs], cwd=tmp, check=True, capture_output=True, timeout=300
        )
        out = []
        for name, version, member in LIBRARIES:
            with tarfile.open(Path(tmp) / f"{name}-{version}.tgz") as tar:
                f = tar.extractfile(member)
                if f is None:
                    raise FileNotFoundError(f"{name}-{version}.tgz has no {member}")
                out.append(f.read().decode("utf-8"))
        return out
