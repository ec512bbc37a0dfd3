"""The Debian package (`make deb`): built once here, then read, unpacked, linted and installed.

Slow, and it needs PyPI and a Debian mirror: the build installs the project and its
dependencies from PyPI into a fresh venv (about a minute), lintian reads all of it (half a
minute) and the install test bootstraps a minimal Debian with debootstrap and installs the
package there with apt, maintainer scripts and all (about two minutes)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.test_systemd import require_tool, verify_unit

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parent.parent
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
CONFFILE = "/etc/consolegw/consolegw.toml"
TEMPLATE = "/usr/share/consolegw/consolegw.toml"
# The host name a test console gets, and the gateway.id postinst must make of it.
HOSTNAME, HOST_ID = "pos-17.dispatch.example.org", "pos-17"
PREFIX = "/opt/consolegw"
MIRROR = os.environ.get("CONSOLEGW_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
ROOT_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def run(
    args: Sequence[str | Path],
    *,
    check: bool = True,
    timeout: float = 600,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
        cwd=cwd,
    )
    if check and result.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, args))} exited {result.returncode}\n"
            f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
        )
    return result


def written(template: str, gateway_id: str) -> str:
    """The config as postinst writes it from the template."""
    assert 'id = "@ID@"' in template
    return template.replace("@ID@", gateway_id)


def configured(installed: str) -> str:
    """The installed config edited as its comments say: standby removed, one channel (with no
    hardware behind it, so nothing here opens a device)."""
    assert "\nstandby = true\n" in installed
    edited = installed.replace("\nstandby = true\n", "\n")
    return edited + '\n[channels.fire-main]\nname = "Fire Main"\n'


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package, built by packaging/build-deb.sh; CONSOLEGW_TEST_DEB names one built
    already (e.g. by `make deb`) to test that one instead."""
    given = os.environ.get("CONSOLEGW_TEST_DEB")
    if given:
        return Path(given).resolve()
    for tool in ("dpkg-deb", "dpkg-shlibdeps", "git"):
        require_tool(tool)
    if not Path("/usr/bin/python3").is_file():
        pytest.skip("the package's venv is made with Debian's /usr/bin/python3, missing here")
    out = tmp_path_factory.mktemp("deb")
    env = {**os.environ, "CONSOLEGW_BUILD_PYTHON": sys.executable}
    run([REPO / "packaging" / "build-deb.sh", out], timeout=1200, env=env)
    (built,) = out.glob("consolegw_*.deb")
    return built


@pytest.fixture(scope="module")
def unpacked(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("unpacked")
    run(["dpkg-deb", "-x", deb, root])
    return root


def test_control_area(deb: Path, tmp_path: Path) -> None:
    arch = run(["dpkg", "--print-architecture"]).stdout.strip()
    fields = {
        name: run(["dpkg-deb", "--field", deb, name]).stdout.strip()
        for name in ("Package", "Version", "Architecture", "Depends", "Maintainer")
    }
    assert fields["Package"] == "consolegw"
    assert fields["Version"] == VERSION
    assert fields["Architecture"] == arch
    assert "example.invalid" not in fields["Maintainer"]
    depends = [d.strip() for d in fields["Depends"].split(",")]
    names = {re.split(r"[ (]", d)[0] for d in depends}
    # Loaded with ctypes at run time (pyusb, sounddevice, the recorder's Opus), and adduser.
    assert {"libusb-1.0-0", "libportaudio2", "libopus0", "libogg0", "adduser"} <= names
    # What the wheels' binaries link to, found by dpkg-shlibdeps.
    assert {"libc6", "libstdc++6"} <= names
    assert "python3 (>= 3.11)" in depends
    assert any(re.fullmatch(r"python3 \(<< 3\.\d+\)", d) for d in depends), depends

    control = tmp_path / "DEBIAN"
    run(["dpkg-deb", "--control", deb, control])
    # No conffile: postinst writes the config, so that no two consoles start with one id.
    assert not (control / "conffiles").exists()
    for script in ("postinst", "prerm", "postrm"):
        path = control / script
        assert os.access(path, os.X_OK), script
        run(["sh", "-n", path])
    assert "md5sums" in run(["dpkg-deb", "--info", deb]).stdout


def _listing(deb: Path) -> dict[str, tuple[str, str, str]]:
    """dpkg-deb --contents as {path: (mode, owner, symlink target)}."""
    entries = {}
    for line in run(["dpkg-deb", "--contents", deb]).stdout.splitlines():
        mode, owner, _size, _date, _time, rest = line.split(None, 5)
        path, _, target = rest.partition(" -> ")
        entries[path.removeprefix(".").rstrip("/") or "/"] = (mode, owner, target)
    return entries


def test_contents(deb: Path) -> None:
    entries = _listing(deb)
    assert {owner for _mode, owner, _target in entries.values()} == {"root/root"}
    assert entries["/usr/bin/consolegw"] == ("lrwxrwxrwx", "root/root", f"{PREFIX}/bin/consolegw")
    expected = {
        f"{PREFIX}/bin/consolegw": "-rwxr-xr-x",
        f"{PREFIX}/pyvenv.cfg": "-rw-r--r--",
        "/lib/systemd/system/consolegw.service": "-rw-r--r--",
        "/lib/udev/rules.d/99-consolegw.rules": "-rw-r--r--",
        TEMPLATE: "-rw-r--r--",  # postinst writes CONFFILE from it, root:consolegw 0640
        "/usr/share/doc/consolegw/README.md": "-rw-r--r--",
        "/usr/share/doc/consolegw/copyright": "-rw-r--r--",
        "/usr/share/doc/consolegw/changelog.gz": "-rw-r--r--",
        "/usr/share/doc/consolegw/examples/example.toml": "-rw-r--r--",
        "/usr/share/man/man1/consolegw.1.gz": "-rw-r--r--",
        "/usr/share/lintian/overrides/consolegw": "-rw-r--r--",
    }
    assert {path: entries.get(path, ("missing",))[0] for path in expected} == expected
    assert not [path for path in entries if path.startswith("/etc/consolegw")]
    # The venv's interpreter is the system's python3 (the package depends on it).
    assert entries[f"{PREFIX}/bin/python3"][2] == "/usr/bin/python3"
    # Byte-code is compiled by postinst, at the final path, not shipped.
    assert not [p for p in entries if p.endswith(".pyc") or "/__pycache__" in p]


def test_files_name_no_build_path(unpacked: Path) -> None:
    # The venv was built in a mktemp staging root: no file may still point there.
    staging = re.compile(rb"consolegw-deb\.[A-Za-z0-9]{6}")
    leaks = [
        str(path.relative_to(unpacked))
        for path in unpacked.rglob("*")
        if path.is_file() and not path.is_symlink() and staging.search(path.read_bytes())
    ]
    assert leaks == []
    assert (
        (unpacked / "opt/consolegw/bin/consolegw")
        .read_text()
        .startswith(f"#!{PREFIX}/bin/python\n")
    )
    packaged_unit = unpacked / "lib/systemd/system/consolegw.service"
    assert packaged_unit.read_bytes() == (REPO / "systemd/consolegw.service").read_bytes()


def test_unpacked_program_and_config(unpacked: Path, tmp_path: Path) -> None:
    # Unpacked anywhere, the venv still works when started through its own interpreter
    # (the scripts' #! names /opt/consolegw, which is the next test's business).
    python = unpacked / "opt/consolegw/bin/python"
    program = unpacked / "opt/consolegw/bin/consolegw"
    # (From tmp_path: run from the repo, `python -c` would import the repo's own gateway/.)
    where = run([python, "-c", "import gateway; print(gateway.__file__)"], cwd=tmp_path).stdout
    assert where.startswith(str(unpacked / "opt/consolegw/lib/")), where
    assert run([python, program, "--version"]).stdout.strip() == f"consolegw {VERSION}"

    # The config as postinst writes it passes check-config (the unit's ExecStartPre) in
    # standby: no radio, and a word that none runs. Standby beside a channel is refused.
    template = (unpacked / TEMPLATE.lstrip("/")).read_text()
    installed = tmp_path / "consolegw.toml"
    installed.write_text(written(template, HOST_ID))
    standby = run([python, program, "check-config", installed])
    assert f"OK: gateway {HOST_ID}, standby, 0 channels" in standby.stdout
    assert "gateway.standby: true: this console runs no radio" in standby.stderr
    both = tmp_path / "both.toml"
    both.write_text(written(template, HOST_ID) + '\n[channels.fire-main]\nname = "Fire Main"\n')
    refused = run([python, program, "check-config", both], check=False)
    assert refused.returncode == 2, refused.stderr
    assert f"{both}: gateway.standby: true, but channels" in refused.stderr
    edited = tmp_path / "edited.toml"
    edited.write_text(configured(installed.read_text()))
    accepted = run([python, program, "check-config", edited])
    assert f"OK: gateway {HOST_ID}, 1 channels" in accepted.stdout


def _namespace_prefix() -> list[str]:
    """unshare into a private mount namespace (with a user namespace when not root)."""
    unshare = require_tool("unshare")
    prefix = [unshare, "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        prefix[1:1] = ["--user", "--map-root-user"]
    if run([*prefix, "true"], check=False).returncode != 0:
        pytest.skip("cannot make a mount namespace here (unshare --mount refused)")
    return prefix


def test_unpacked_at_its_own_path(unpacked: Path) -> None:
    # In a private mount namespace, an empty /opt with the unpacked /opt/consolegw bound on
    # it: the scripts' #! lines and the unit's programs resolve as on a console. Nothing
    # outside the namespace sees the mounts.
    at_opt = [
        *_namespace_prefix(),
        "sh",
        "-euc",
        'mount -t tmpfs tmpfs /opt; mkdir /opt/consolegw; mount --bind "$0" /opt/consolegw; '
        'exec "$@"',
        str(unpacked / "opt/consolegw"),
    ]
    version = run([*at_opt, f"{PREFIX}/bin/consolegw", "--version"])
    assert version.stdout.strip() == f"consolegw {VERSION}"

    tool = require_tool("systemd-analyze")
    unit = unpacked / "lib/systemd/system/consolegw.service"
    env = {**os.environ, "MANPATH": str(unpacked / "usr/share/man"), "SYSTEMD_LOG_COLOR": "0"}
    # ExecStart's program found and the Documentation= man page found in the package.
    verified = run([*at_opt, tool, "verify", unit], check=False, env=env)
    assert (verified.returncode, verified.stdout + verified.stderr) == (0, "")
    # Without the namespace, /opt/consolegw is missing: the check above is not vacuous.
    if not Path(PREFIX).exists():
        missing = verify_unit(unit, manpath=unpacked / "usr/share/man")
        assert "is not executable" in missing.stdout + missing.stderr


def test_lintian(deb: Path) -> None:
    lintian = require_tool("lintian")
    result = run(
        [
            lintian,
            "--display-info",
            "--pedantic",
            "--display-experimental",
            "--tag-display-limit",
            "0",
            deb,
        ],
        check=False,
    )
    # Every tag left is overridden with its reason in packaging/lintian-overrides.
    tags = [line for line in result.stdout.splitlines() if re.match(r"[EWIPXO]: ", line)]
    assert tags == [], result.stdout
    assert "unused override" not in result.stdout
    assert result.returncode == 0, result.stdout + result.stderr


def _os_release() -> dict[str, str]:
    fields = {}
    for line in Path("/etc/os-release").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key] = value.strip().strip('"')
    return fields


def test_install_in_a_debian_root(deb: Path, tmp_path: Path) -> None:
    """apt installs the .deb into a fresh minimal Debian (debootstrap --variant=minbase) with
    its maintainer scripts, then the package is upgraded in place and purged."""
    if os.geteuid() != 0:
        pytest.skip("debootstrap and chroot need root")
    release = _os_release()
    if release.get("ID") != "debian" or not release.get("VERSION_CODENAME"):
        pytest.skip("bootstraps the host's Debian release; this host is not Debian")
    debootstrap = require_tool("debootstrap")
    prefix = _namespace_prefix()
    root = tmp_path / "root"
    # Each command runs chrooted in a namespace of its own, with its own /proc: no mount is
    # left behind, whatever happens to the test.
    # (--uts: a host name of the test's, for postinst to name the console after.)
    chroot = [*prefix, "--uts", "--pid", "--fork", f"--mount-proc={root}/proc", "chroot", str(root)]
    clean_env = ["env", "-i", f"PATH={ROOT_PATH}", "HOME=/root", "LANG=C.UTF-8"]

    def in_root(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = [*clean_env, "DEBIAN_FRONTEND=noninteractive"]
        return run([*chroot, *env, *args], check=check, timeout=900)

    def as_daemon_user(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return in_root("runuser", "-u", "consolegw", "--", *args, check=check)

    try:
        run(
            [debootstrap, "--variant=minbase", release["VERSION_CODENAME"], root, MIRROR],
            timeout=900,
        )
        shutil.copyfile("/etc/resolv.conf", root / "etc/resolv.conf")
        shutil.copyfile(deb, root / "tmp" / deb.name)
        in_root("apt-get", "update", "-qq")
        install = f"apt-get install -y -qq --no-install-recommends /tmp/{deb.name}"
        in_root("sh", "-c", f"hostname {HOSTNAME} && {install}")

        # postinst: the system user in the hardware groups, the config readable by its group.
        passwd = in_root("getent", "passwd", "consolegw").stdout.strip().split(":")
        assert passwd[5:] == ["/var/lib/consolegw", "/usr/sbin/nologin"], passwd
        groups = set(in_root("id", "-nG", "consolegw").stdout.split())
        assert {"consolegw", "dialout", "plugdev", "audio"} <= groups
        mode = in_root("stat", "-c", "%U %G %a", CONFFILE).stdout.strip()
        assert mode == "root consolegw 640"
        compiled = in_root("find", f"{PREFIX}/lib", "-name", "cli.*.pyc", "-path", "*gateway*")
        assert compiled.stdout.strip(), "postinst compiled no byte-code"

        assert in_root("consolegw", "--version").stdout.strip() == f"consolegw {VERSION}"
        # The libraries the Depends: bring: every binary's, and the two ctypes loads.
        ldd = in_root(
            "sh", "-c", f"find {PREFIX} -type f -name '*.so*' -exec ldd {{}} +", check=False
        )
        assert ldd.stdout.count("=>") > 50, ldd.stdout + ldd.stderr
        assert "not found" not in ldd.stdout
        libs = in_root(
            f"{PREFIX}/bin/python",
            "-c",
            "import usb.backend.libusb1 as u, sounddevice as sd; "
            "assert u.get_backend() is not None; print(sd.get_portaudio_version()[1])",
        )
        assert "PortAudio" in libs.stdout

        # The service's view: as its user, the config postinst wrote (named after the host,
        # in standby) passes the unit's ExecStartPre, and the daemon runs it, keying nothing,
        # and stops cleanly; then the technician's edit is accepted.
        conffile = root / CONFFILE.lstrip("/")
        assert conffile.read_text() == written((root / TEMPLATE.lstrip("/")).read_text(), HOST_ID)
        standby = as_daemon_user("consolegw", "check-config", CONFFILE)
        assert f"OK: gateway {HOST_ID}, standby, 0 channels" in standby.stdout
        in_root("install", "-d", "-o", "consolegw", "-g", "consolegw", "/var/lib/consolegw")
        daemon = ["consolegw", "run", "-c", CONFFILE]
        ran = as_daemon_user(
            "timeout", "--preserve-status", "-s", "TERM", "10", *daemon, check=False
        )
        assert ran.returncode == 0, ran.stderr
        assert "gateway.standby: true" in ran.stderr
        assert in_root("ls", "/var/lib/consolegw").stdout.strip(), "the daemon wrote no state"
        conffile.write_text(configured(conffile.read_text()))  # keeps owner and mode
        as_daemon_user("consolegw", "check-config", CONFFILE)

        # An upgrade (the same version again) keeps the technician's config.
        in_root("dpkg", "-i", f"/tmp/{deb.name}")
        assert conffile.read_text() == configured(
            written((root / TEMPLATE.lstrip("/")).read_text(), HOST_ID)
        )
        assert in_root("stat", "-c", "%U %G %a", CONFFILE).stdout.strip() == mode

        # Purge leaves nothing of the package but the system user.
        in_root("apt-get", "purge", "-y", "-qq", "consolegw")
        for path in (PREFIX, "/etc/consolegw", "/var/lib/consolegw", "/usr/bin/consolegw"):
            assert not (root / path.lstrip("/")).exists(), path
        overrides = in_root("dpkg-statoverride", "--list", CONFFILE, check=False)
        assert overrides.stdout == ""
    finally:
        shutil.rmtree(root, ignore_errors=True)
