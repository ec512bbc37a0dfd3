#!/bin/bash
# Build consolegw_<version>_<arch>.deb with dpkg-deb (no debhelper, no source package).
#
#   packaging/build-deb.sh [OUTDIR]      (default: build/; `make deb` runs this)
#
# /opt/consolegw is a virtual environment of Debian's /usr/bin/python3 holding the project's
# wheel and its dependencies from PyPI, at the versions of the development .venv when there
# is one (the versions the tests ran against). It is built in a staging root made with
# mktemp, at <stage>/opt/consolegw, and then moved in place by rewriting the staging prefix
# wherever pip wrote it (script shebangs, pyvenv.cfg, activate scripts); the build fails
# if any file still holds it. No byte-code is shipped: postinst compiles it, at its final
# path. dpkg-shlibdeps derives the shared-library dependencies of the wheels' binaries.
# Nothing is written outside the mktemp directory but the .deb in OUTDIR.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$(mkdir -p "${1:-$repo/build}" && cd "${1:-$repo/build}" && pwd)
pkg=$repo/packaging
prefix=/opt/consolegw
# The interpreter the console runs (the python3 package); the venv's bin/python links to it.
target_python=${CONSOLEGW_TARGET_PYTHON:-/usr/bin/python3}
# The interpreter that runs pip (pip >= 22.3 for --python) and builds the wheel.
build_python=${CONSOLEGW_BUILD_PYTHON:-$repo/.venv/bin/python}

say() { echo "build-deb: $*" >&2; }
die() {
	say "error: $*"
	exit 1
}

for tool in dpkg-deb dpkg dpkg-shlibdeps git gzip; do
	command -v "$tool" >/dev/null || die "$tool not found"
done
[ -x "$target_python" ] || die "$target_python not found (apt-get install python3)"
[ -x "$build_python" ] || die "$build_python not found (make venv)"

version=$("$build_python" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$repo/pyproject.toml")
changelog_version=$(sed -n '1s/^consolegw (\([^)]*\)).*/\1/p' "$pkg/changelog")
[ "$changelog_version" = "$version" ] ||
	die "packaging/changelog's top entry is $changelog_version, pyproject.toml says $version"
arch=$(dpkg --print-architecture)
pyver=$("$target_python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
pynext=$("$target_python" -c 'import sys; print("%d.%d" % (sys.version_info[0], sys.version_info[1] + 1))')

work=$(mktemp -d "${TMPDIR:-/tmp}/consolegw-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
# dpkg-shlibdeps wants the package's files in debian/<package>/ beside debian/control.
stage=$work/debian/consolegw
venv=$stage$prefix
mkdir -p "$work/src" "$work/wheels" "$stage"

say "consolegw $version for $arch, Python $pyver; working in $work"

# The working tree as git sees it (tracked and new files, not ignored ones), so that no
# .venv, build/ or egg-info goes into the wheel and the build writes nothing in the repo.
(cd "$repo" && git ls-files -z --cached --others --exclude-standard |
	while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done |
	tar --null -T - -cf -) | tar -C "$work/src" -xf -
"$build_python" -m pip wheel -q --no-deps --wheel-dir "$work/wheels" "$work/src"

"$target_python" -m venv --without-pip "$venv"
# The development venv's versions (the ones the tests ran against) as constraints: only
# name==version lines, not the project itself nor anything installed from a path or URL.
constraints=$work/constraints.txt
: >"$constraints"
if [ -x "$repo/.venv/bin/python" ]; then
	"$repo/.venv/bin/python" -m pip freeze --exclude-editable |
		grep -E '^[A-Za-z0-9._-]+==[^ ]+$' | grep -vi '^consolegw==' >"$constraints" || true
fi
# consolegw by name from the wheel directory (not by file), so no build path is recorded in
# its direct_url.json. Binary wheels only: nothing is compiled against this build machine.
"$build_python" -m pip --python "$venv/bin/python" install -q --no-compile \
	--disable-pip-version-check --no-warn-script-location --only-binary=:all: \
	--find-links "$work/wheels" --constraint "$constraints" "consolegw==$version"
"$build_python" -m pip --python "$venv/bin/python" check >&2

# Move the venv from <stage>/opt/consolegw to /opt/consolegw.
grep -rlIZF -- "$venv" "$venv" | xargs -0 -r sed -i "s|$venv|$prefix|g"
if leftover=$(grep -rlF -- "$stage" "$venv"); then
	die "files still naming the staging root: $leftover"
fi
find "$venv" -name __pycache__ -type d -prune -exec rm -rf {} +
# What postinst will do, checked here (a file that does not compile fails the build).
"$venv/bin/python" -m compileall -q -j 0 "$venv/lib" >/dev/null ||
	die "compileall failed in the venv"
find "$venv" -name __pycache__ -type d -prune -exec rm -rf {} +
got=$("$venv/bin/python" -m gateway.cli --version)
[ "$got" = "consolegw $version" ] || die "the venv says '$got', expected 'consolegw $version'"

# The rest of the file system.
install -d "$stage/usr/bin"
ln -s "$prefix/bin/consolegw" "$stage/usr/bin/consolegw"
install -D -m 0644 "$repo/systemd/consolegw.service" "$stage/lib/systemd/system/consolegw.service"
install -D -m 0644 "$repo/systemd/99-consolegw.rules" "$stage/lib/udev/rules.d/99-consolegw.rules"
# The config's template: postinst writes /etc/consolegw/consolegw.toml from it, once, with
# this machine's name as gateway.id (a shipped conffile would give every console one id).
install -D -m 0644 "$pkg/consolegw.toml" "$stage/usr/share/consolegw/consolegw.toml"
doc=$stage/usr/share/doc/consolegw
install -D -m 0644 "$repo/README.md" "$doc/README.md"
install -D -m 0644 "$repo/config/example.toml" "$doc/examples/example.toml"
gzip -9n <"$pkg/changelog" >"$doc/changelog.gz"
install -D -m 0644 "$pkg/consolegw.1" "$stage/usr/share/man/man1/consolegw.1"
gzip -9n "$stage/usr/share/man/man1/consolegw.1"
install -D -m 0644 "$pkg/lintian-overrides" "$stage/usr/share/lintian/overrides/consolegw"
{
	sed "s|@PYVER@|$pyver|g" "$pkg/copyright.in"
	"$venv/bin/python" "$pkg/bundled_licenses.py"
} >"$doc/copyright"
chmod 0644 "$doc/copyright" "$doc/changelog.gz"

# Modes as Debian wants them, whatever the umask was; shared libraries need no x bit.
rmdir "$venv/include/python$pyver" "$venv/include" 2>/dev/null || true
find "$stage" -type d -exec chmod 0755 {} +
find "$stage" -type f -exec chmod go-w,a+r {} +
find "$venv/lib" -type f \( -name '*.so' -o -name '*.so.*' \) -exec chmod 0644 {} +

# Control area.
mkdir -p "$stage/DEBIAN"
# The wheels' binaries link to libc6, libstdc++6, zlib1g...: as dh_shlibdeps would. The
# libraries a wheel bundles (<name>.libs/) are private: searched there, no dependency.
printf 'Source: consolegw\n\nPackage: consolegw\nArchitecture: any\n' >"$work/debian/control"
mapfile -d '' elves < <(find "$stage" -type f \( -name '*.so' -o -name '*.so.*' \) -print0)
mapfile -d '' private < <(find "$venv" -type d -name '*.libs' -printf '-l%p\0')
shlibs=$(cd "$work" && dpkg-shlibdeps -O --ignore-missing-info "${private[@]}" \
	"${elves[@]/#/-e}" 2>"$work/shlibdeps.log") || {
	cat "$work/shlibdeps.log" >&2
	die "dpkg-shlibdeps failed"
}
shlibs=${shlibs#shlibs:Depends=}
# pyusb loads libusb-1.0 and sounddevice PortAudio with ctypes: no ELF names them.
depends="python3 (>= $pyver), python3 (<< $pynext), $shlibs, libusb-1.0-0, libportaudio2, libopus0, libogg0, adduser"
installed_size=$(du -sk --apparent-size "$stage" | cut -f1)
sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$arch|" -e "s|@DEPENDS@|$depends|" \
	-e "s|@INSTALLED_SIZE@|$installed_size|" "$pkg/control.in" >"$stage/DEBIAN/control"
install -m 0755 "$pkg/postinst" "$pkg/prerm" "$pkg/postrm" "$stage/DEBIAN/"
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z |
	xargs -0 md5sum) >"$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/md5sums"

deb=$out/consolegw_${version}_${arch}.deb
# gzip: 10 s where xz takes two minutes on two cores, for 46 MB instead of 32.
dpkg-deb --root-owner-group -Zgzip --build "$stage" "$deb" >/dev/null
say "wrote $deb ($(du -h "$deb" | cut -f1), $((installed_size / 1024)) MiB installed)"
echo "$deb"
