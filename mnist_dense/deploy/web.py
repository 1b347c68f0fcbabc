"""`export --format web`: the drawing page as a folder that any static file server serves, with no server of ours.

The folder holds `serve`'s own page (the same HTML, CSS and drawing code), each network as an ONNX file checked as
`export` checks it, and onnxruntime-web, which runs them in the browser (WebAssembly). The page prepares a drawing
as `mnist_dense.pictures` does (prepare.js) and asks the networks in the page: after it has loaded, no request
leaves it. onnxruntime-web comes from the npm registry through `npm pack`; npm keeps it in its cache, so a later
build works offline. The folder is written beside its place and renamed into it whole.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from mnist_dense.deploy.export import ExportCheck, export
from mnist_dense.deploy.inference import DeployError

ORT_WEB = ("onnxruntime-web", "1.31.1")
# The ES-module build with its loader bundled in, the WebAssembly it loads, and package.json (version, MIT licence).
ORT_FILES = ("dist/ort.wasm.bundle.min.mjs", "dist/ort-wasm-simd-threaded.wasm", "package.json")
PAGE_SOURCE = Path(__file__).parent / "page"
PAGE_SCRIPTS = ("app.js", "style.css", "prepare.js", "networks.js")
MANIFEST = "networks.json"
# Only the folder's own files; WebAssembly compiled from them ('wasm-unsafe-eval'), no other script evaluation.
PAGE_POLICY = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; img-src 'self' data:; object-src 'none';"
    " base-uri 'none'; form-action 'none'"
)
HEAD_MARK = "<!-- page-head -->"


@dataclass
class PageReport:
    """What `write_page` wrote: the folder, its size, and each network's export check."""

    path: Path
    size: int
    runtime: str
    checks: dict[str, ExportCheck]


def write_page(ckpt_paths: list[Path], names: list[str], output: Path, data_dir: str) -> PageReport:
    """The page, its scripts, the runtime and one checked .onnx file per network, into `output` (a new folder, or
    one this command wrote before, which is replaced)."""
    if output.exists() and not (output / MANIFEST).is_file() and (not output.is_dir() or any(output.iterdir())):
        raise DeployError(
            f"--output {output} exists and is not a page folder this command wrote; give a new folder (or an empty"
            " one), so that nothing of yours is replaced."
        )
    partial = output.with_name(f".{output.name}.partial")
    try:
        try:
            shutil.rmtree(partial, ignore_errors=True)
            (partial / "draw" / "ort").mkdir(parents=True)
            (partial / "networks").mkdir()
        except OSError as err:
            raise DeployError(f"cannot write {partial} ({err}); choose another --output.") from None
        fetch_runtime(partial / "draw" / "ort")
        checks = {
            name: export(path, partial / "networks" / f"{name}.onnx", "onnx", data_dir)
            for name, path in zip(names, ckpt_paths, strict=True)
        }
        write_page_files(partial, names, {name: check.threshold for name, check in checks.items()})
        replace_folder(partial, output)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    size = sum(file.stat().st_size for file in output.rglob("*") if file.is_file())
    return PageReport(output, size, "@".join(ORT_WEB), checks)


def fetch_runtime(target: Path) -> None:
    """onnxruntime-web's files through `npm pack` (npm's cache answers when offline), into `target`."""
    package = "@".join(ORT_WEB)
    npm = shutil.which("npm")
    if npm is None:
        raise DeployError(
            f"export --format web needs npm to fetch {package} from the npm registry (once: npm caches it):"
            " install Node.js with npm (Debian: apt-get install npm), then run the command again."
        )
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run(
            [npm, "pack", package, "--prefer-offline", "--silent", "--pack-destination", folder],
            capture_output=True,
            text=True,
        )
        tarballs = list(Path(folder).glob("*.tgz"))
        if done.returncode != 0 or len(tarballs) != 1:
            said = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise DeployError(
                f"npm could not fetch {package} ({said}). It is fetched from the npm registry once and then served"
                " from npm's cache: connect to the registry (or set a mirror with `npm config set registry URL`)"
                " and run the command again."
            )
        with tarfile.open(tarballs[0]) as archive:
            for name in ORT_FILES:
                try:
                    member = archive.extractfile(f"package/{name}")
                except KeyError:
                    member = None
                if member is None:
                    raise DeployError(f"{package} from npm has no {name}; please report this.")
                (target / Path(name).name).write_bytes(member.read())


def write_page_files(folder: Path, names: list[str], thresholds: dict[str, float | None]) -> None:
    """serve's page as it is, with the static page's policy and the manifest of networks in its head (each with
    calibrate's "not a digit" threshold, null without one)."""
    html = (PAGE_SOURCE / "index.html").read_text()
    head = (
        f'<meta http-equiv="Content-Security-Policy" content="{PAGE_POLICY}">\n'
        f'  <meta name="mnist-dense-networks" content="{MANIFEST}">'
    )
    (folder / "index.html").write_text(html.replace(HEAD_MARK, head))
    for name in PAGE_SCRIPTS:
        shutil.copyfile(PAGE_SOURCE / name, folder / "draw" / name)
    networks = [{"name": name, "file": f"networks/{name}.onnx", "threshold": thresholds[name]} for name in names]
    manifest = {"runtime": "@".join(ORT_WEB), "networks": networks}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    (folder / ".nojekyll").write_text("")  # GitHub Pages serves the folder as it is


def replace_folder(partial: Path, output: Path) -> None:
    """Rename the finished folder into place; an earlier page there is moved aside first, then removed."""
    old = output.with_name(f".{output.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    try:
        if output.exists():
            output.rename(old)
        partial.rename(output)
    except OSError as err:
        raise DeployError(f"cannot write {output} ({err}); choose another --output.") from None
    shutil.rmtree(old, ignore_errors=True)
